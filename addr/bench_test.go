package addr_test

import (
	"net/netip"
	"os/exec"
	"testing"

	"github.com/nsnet/nsnet/addr"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/veth"
)

func benchLink(b *testing.B) {
	b.Helper()
	nstest.Require(b)
	if err := veth.Create(nil, veth.Config{Name: "ba0", PeerName: "ba1", Up: true}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { veth.Delete(nil, "ba0") })
}

// BenchmarkAddDelete is "ip address add 192.0.2.1/24 dev ba0; ip address
// del ..." done by the library; BenchmarkIPAddrAddDel times ip(8) in the
// same run.
func BenchmarkAddDelete(b *testing.B) {
	benchLink(b)
	p := netip.MustParsePrefix("192.0.2.1/24")
	for b.Loop() {
		if err := addr.Add(nil, "ba0", p); err != nil {
			b.Fatal(err)
		}
		if err := addr.Delete(nil, "ba0", p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIPAddrAddDel(b *testing.B) {
	benchLink(b)
	nstest.RequireCmd(b, "ip")
	for b.Loop() {
		if err := exec.Command("ip", "address", "add", "192.0.2.1/24", "dev", "ba0").Run(); err != nil {
			b.Fatal(err)
		}
		if err := exec.Command("ip", "address", "del", "192.0.2.1/24", "dev", "ba0").Run(); err != nil {
			b.Fatal(err)
		}
	}
}
