package network_test

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/network"
	"github.com/nsnet/nsnet/nstest"
)

// collideFirst makes nl.RandomIndex return index once, then random ones,
// until the test ends.
func collideFirst(t *testing.T, index int) {
	first := true
	t.Cleanup(nl.SetIndexSource(func() int {
		if first {
			first = false
			return index
		}
		return 1<<29 + rand.IntN(1<<29)
	}))
}

// TestTakenIndex: the bridge's and a member's host end's indexes, chosen at
// random, may be taken by another link of the host (the kernel answers
// EEXIST, as for a taken name): Create and Attach try other ones.
func TestTakenIndex(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "ntix-")
	nstest.Cmd(t, "ip", "-n", w.HostName, "link", "add", "taken0", "index", "600000001", "type", "veth", "peer", "name", "taken1")
	collideFirst(t, 600000001)
	n := newNetwork(t, network.Config{HostNS: w.Host, Uplink: w.Uplink, Prefix: netip.MustParsePrefix("10.86.0.0/24")})
	collideFirst(t, 600000001)
	_, m := attach(t, n, "ntix-ns", network.MemberConfig{Name: "a"})
	for _, dev := range []string{n.Bridge, m.HostVeth} {
		if out := nstest.Cmd(t, "ip", "-n", w.HostName, "-o", "link", "show", "dev", dev); strings.HasPrefix(out, "600000001:") {
			t.Errorf("%s has the taken index: %s", dev, out)
		}
	}
	if !nstest.Ping(t, "ntix-ns", "203.0.113.1") {
		t.Error("the member does not reach the outside")
	}
}
