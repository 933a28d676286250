package route_test

import (
	"net/netip"
	"os/exec"
	"testing"

	"github.com/nsnet/nsnet/addr"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/route"
	"github.com/nsnet/nsnet/veth"
)

func benchLink(b *testing.B) {
	b.Helper()
	nstest.Require(b)
	if err := veth.Create(nil, veth.Config{Name: "br0", PeerName: "br1", Up: true}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { veth.Delete(nil, "br0") })
	if err := addr.Add(nil, "br0", netip.MustParsePrefix("192.0.2.1/24")); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAddDelete is "ip route add 198.51.100.0/24 via 192.0.2.2; ip
// route del ..." done by the library; BenchmarkIPRouteAddDel times ip(8) in
// the same run.
func BenchmarkAddDelete(b *testing.B) {
	benchLink(b)
	r := route.Route{Dst: netip.MustParsePrefix("198.51.100.0/24"), Gateway: netip.MustParseAddr("192.0.2.2")}
	for b.Loop() {
		if err := route.Add(nil, r); err != nil {
			b.Fatal(err)
		}
		if err := route.Delete(nil, r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIPRouteAddDel(b *testing.B) {
	benchLink(b)
	nstest.RequireCmd(b, "ip")
	for b.Loop() {
		if err := exec.Command("ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.2").Run(); err != nil {
			b.Fatal(err)
		}
		if err := exec.Command("ip", "route", "del", "198.51.100.0/24", "via", "192.0.2.2").Run(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGet is "ip route get" done by the library.
func BenchmarkGet(b *testing.B) {
	benchLink(b)
	dst := netip.MustParseAddr("192.0.2.9")
	for b.Loop() {
		if _, err := route.Get(nil, dst); err != nil {
			b.Fatal(err)
		}
	}
}
