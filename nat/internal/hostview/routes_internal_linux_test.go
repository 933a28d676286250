package hostview

import (
	"net/netip"
	"testing"

	"github.com/nsnet/nsnet/internal/nl"

	"golang.org/x/sys/unix"
)

// TestRouteCacheOverlap checks the indexed overlap search against the
// obvious linear one, for routes inside, around, beside and equal to the
// prefix asked about, and after deletions.
func TestRouteCacheOverlap(t *testing.T) {
	var rc routeCache
	rc.reset(nil)
	add := func(p string, typ uint8, oif int) RouteKey {
		k := RouteKey{Table: unix.RT_TABLE_MAIN, Type: typ, OIF: oif, Dst: netip.MustParsePrefix(p)}
		rc.add(k)
		return k
	}
	add("0.0.0.0/0", unix.RTN_UNICAST, 1)
	add("203.0.113.0/24", unix.RTN_UNICAST, 2)
	local := add("203.0.113.2/32", unix.RTN_LOCAL, 2)
	add("203.0.113.255/32", unix.RTN_BROADCAST, 2)
	add("10.0.0.0/24", unix.RTN_UNICAST, 3)
	add("172.16.0.0/12", unix.RTN_UNICAST, 4)
	add("10.9.0.64/26", unix.RTN_UNICAST, 5)
	linear := func(c netip.Prefix) bool {
		for _, routes := range rc.byLink {
			for k := range routes {
				if k.counts() && k.Dst.Overlaps(c) {
					return true
				}
			}
		}
		return false
	}
	for _, c := range []string{"10.0.0.0/24", "10.0.0.0/16", "10.0.1.0/24", "10.0.0.128/25", "172.20.0.0/24", "172.32.0.0/24",
		"203.0.113.0/30", "203.0.113.252/30", "10.9.0.0/24", "10.9.0.0/26", "10.9.0.128/25", "192.168.0.0/16", "11.0.0.0/8"} {
		p := netip.MustParsePrefix(c)
		got := rc.overlap(p)
		if (got != nil) != linear(p) || (got != nil && !got.Dst.Overlaps(p)) {
			t.Errorf("overlap(%v) = %v, linear search says %v", p, got, linear(p))
		}
	}
	if d := rc.defaultLinks(unix.NFPROTO_IPV4); len(d) != 1 || d[0] != 1 || rc.locals[2] != 1 {
		t.Errorf("default links %v, locals %v", rc.defaultLinks(unix.NFPROTO_IPV4), rc.locals)
	}
	// Link 3 goes away: its routes with it, as the kernel flushes them.
	ifi := make([]byte, unix.SizeofIfInfomsg)
	ifi[4] = 3
	rc.apply(unix.RTM_DELLINK, 0, ifi)
	rc.del(local)
	if rc.overlap(netip.MustParsePrefix("10.0.0.0/24")) != nil || rc.locals[2] != 0 || rc.stale {
		t.Errorf("after deletions: %v, locals %v, stale %v", rc.overlap(netip.MustParsePrefix("10.0.0.0/24")), rc.locals, rc.stale)
	}
	// Link 2 goes down: the kernel flushes its routes but keeps its local
	// ones (its addresses stay), silently.
	local = add("203.0.113.2/32", unix.RTN_LOCAL, 2)
	ifi[4] = 2 // flags 0: down
	rc.apply(unix.RTM_NEWLINK, 0, ifi)
	if !rc.has(local) || len(rc.byLink[2]) != 1 || rc.stale {
		t.Errorf("after link 2 went down: %v, stale %v", rc.byLink[2], rc.stale)
	}
	// What the copy cannot follow exactly makes it stale (rebuilt from a
	// dump at the next look): a replaced route.
	rc.apply(unix.RTM_NEWROUTE, unix.NLM_F_REPLACE, routeMsg(t, "10.70.1.0/24", 4))
	if !rc.stale {
		t.Error("a replaced route left the copy fresh")
	}
}

func routeMsg(t *testing.T, dst string, oif int) []byte {
	t.Helper()
	b := nl.RouteMessage(nl.RouteSpec{Dst: netip.MustParsePrefix(dst), LinkIndex: oif, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST})
	return b
}
