package nat_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// TestPointToPoint: links of one address each (/32, /128), sharing one
// gateway address on their host ends, as CNI's ptp plugin lays out a
// shared subnet: each reaches the outside in both families, they do not
// reach each other, closing one leaves the other working, and the host
// reads as before at the end.
func TestPointToPoint(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "ptp-")
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	dst6 := serve6(t, w)
	before := state(t, w)
	gw, gw6 := netip.MustParseAddr("10.40.0.1"), netip.MustParseAddr("fd00:40::1")
	var links []*nat.Link
	var nss []*netns.Handle
	for i, a := range []string{"5", "6"} {
		name := "ptp-" + a
		ns := nstest.NewNS(t, name)
		cfg := nat.Config{HostNS: w.Host, HostAddr: gw, HostAddr6: gw6, Prefix6: netip.MustParsePrefix("fd00:40::" + a + "/128")}
		l, err := cfg.Connect(ns, "up0", netip.MustParsePrefix("10.40.0."+a+"/32"))
		if err != nil {
			t.Fatal(err)
		}
		links, nss = append(links, l), append(nss, ns)
		if l.NSAddr != netip.MustParsePrefix("10.40.0."+a+"/32") || l.HostAddr != netip.MustParsePrefix("10.40.0.1/32") {
			t.Errorf("link %d: %v", i, l)
		}
		if seen, err := nstest.Echo(ns, "203.0.113.1:8080"); err != nil || seen != "203.0.113.2" {
			t.Errorf("%s IPv4: %q %v", name, seen, err)
		}
		if seen, err := nstest.Echo(ns, dst6); err != nil || seen != "2001:db8::2" {
			t.Errorf("%s IPv6: %q %v", name, seen, err)
		}
		out := nstest.Cmd(t, "ip", "-n", name, "route")
		if !strings.Contains(out, "default via 10.40.0.1 dev eth0") || !strings.Contains(out, "10.40.0.1 dev eth0 proto kernel scope link src 10.40.0."+a) {
			t.Errorf("%s routes:\n%s", name, out)
		}
	}
	if nstest.Ping(t, "ptp-5", "10.40.0.6") || nstest.Ping(t, "ptp-6", "fd00:40::5") {
		t.Error("point-to-point links reached each other")
	}
	if err := links[0].Close(); err != nil {
		t.Fatal(err)
	}
	if seen, err := nstest.Echo(nss[1], "203.0.113.1:8080"); err != nil || seen != "203.0.113.2" {
		t.Errorf("the other link after a Close: %q %v", seen, err)
	}
	if err := links[1].Close(); err != nil {
		t.Fatal(err)
	}
	sameState(t, w, before, "after both Closes")
}
