package nat_test

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nstest"
)

// takenIndex is the index of a link that TestTakenIndex makes beforehand,
// in RandomIndex's range.
const takenIndex = 600000001

// collideFirst makes nl.RandomIndex return takenIndex once, then random
// ones, until the test ends.
func collideFirst(t *testing.T) {
	first := true
	restore := nl.SetIndexSource(func() int {
		if first {
			first = false
			return takenIndex
		}
		return 1<<29 + rand.IntN(1<<29)
	})
	t.Cleanup(restore)
}

// TestTakenIndex: the host end's index, chosen at random, may be one that
// another link of the host has (one Connect in 50,000 next to 10,000 links
// of such indexes). The kernel then answers EEXIST, as for a taken name;
// Connect tries again with other indexes instead of failing. A taken name
// is still an error, at once.
func TestTakenIndex(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "tix-")
	ns := nstest.NewNS(t, "tix-ns")
	inHost(t, w, "ip", "link", "add", "taken0", "index", "600000001", "type", "veth", "peer", "name", "taken1")
	collideFirst(t)
	l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix("10.6.1.0/24"))
	if err != nil {
		t.Fatalf("Connect with the first index taken: %v", err)
	}
	defer l.Close()
	if out := inHost(t, w, "ip", "-o", "link", "show", "dev", l.HostVeth); strings.HasPrefix(out, "600000001:") {
		t.Errorf("the host end has the taken index: %s", out)
	}
	if !nstest.Ping(t, "tix-ns", "203.0.113.1") {
		t.Error("the link does not work")
	}

	ns2 := nstest.NewNS(t, "tix-ns2")
	collideFirst(t)
	_, err = nat.Config{HostNS: w.Host, HostVeth: "taken0"}.Connect(ns2, "up0", netip.MustParsePrefix("10.6.2.0/24"))
	if !errors.Is(err, syscall.EEXIST) {
		t.Errorf("Connect with a taken host end name: %v, want EEXIST", err)
	}
}
