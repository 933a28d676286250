package nat_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nstest"
)

// TestFastPath: after its first packet, a link's own flow, both ways and
// in both families, is accepted by the first rule of forward (the fast
// set) and never reaches from_link or to_link, whose packets counter rules
// put at their heads count; the fast set holds the link's four entries,
// and nothing after Close. The oracle is nft's own counters and listing:
// with the fast rule missing or its key laid out wrong, all 40 requests
// would pass from_link and all 40 replies to_link (traffic flows either
// way, so ping alone cannot tell).
func TestFastPath(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "fast-")
	ns := nstest.NewNS(t, "fast-ns")
	l, err := nat.Config{HostNS: w.Host, Prefix6: p6("fd00:f::/64"), DNS: nat.DNSNone}.Connect(ns, "up0", p6("10.0.73.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if n := strings.Count(nftIn(t, w, "-j", "list", "set", "inet", "nsnet", "fast"), `"concat"`); n != 4 {
		t.Errorf("the fast set holds %d entries, want 4 (out and back, two families)", n)
	}
	nftIn(t, w, "insert rule inet nsnet from_link counter comment \"test\"")
	nftIn(t, w, "insert rule inet nsnet to_link counter comment \"test\"")
	for _, dst := range []string{"203.0.113.1", "2001:db8::1"} {
		out := nstest.Cmd(t, "ip", "netns", "exec", "fast-ns", "ping", "-c", "20", "-i", "0.01", "-W", "1", dst)
		if !strings.Contains(out, "20 received") {
			t.Fatalf("ping %s:\n%s", dst, out)
		}
	}
	count := func(chain string) int {
		out := nftIn(t, w, "list", "chain", "inet", "nsnet", chain)
		m := regexp.MustCompile(`counter packets (\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no counter in %s:\n%s", chain, out)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	// One ping's echo requests are one connection: its first packet (new)
	// passes from_link's checks, once per family.
	if got := count("from_link"); got != 2 {
		t.Errorf("%d packets reached from_link, want 2 (the first of each ping)", got)
	}
	if got := count("to_link"); got != 0 {
		t.Errorf("%d packets reached to_link, want 0 (replies take the fast rule)", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if out, err := nstest.CmdErr("ip", "netns", "exec", w.HostName, "nft", "list", "set", "inet", "nsnet", "fast"); err == nil && strings.Contains(out, "elements") {
		t.Errorf("fast set entries left after Close:\n%s", out)
	}
}
