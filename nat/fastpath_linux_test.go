package nat_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
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

// TestOlderTable: a table made by an older nsnet, without the fast set,
// is refused by Connect with an error that says so, before anything is
// made; a link of this version whose table was made again that way (an
// older process after a flush) still closes, taking its entries from the
// sets that are there.
func TestOlderTable(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "older-")
	ns1, ns2 := nstest.NewNS(t, "older-1"), nstest.NewNS(t, "older-2")
	cfg := nat.Config{HostNS: w.Host, DNS: nat.DNSNone}
	l1, err := cfg.Connect(ns1, "up0", p6("10.0.74.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	m := regexp.MustCompile(`@fast accept .*# handle (\d+)`).FindStringSubmatch(nftIn(t, w, "-a", "list", "chain", "inet", "nsnet", "forward"))
	if m == nil {
		t.Fatal("no fast rule in forward")
	}
	nftIn(t, w, "delete rule inet nsnet forward handle "+m[1]+"; delete set inet nsnet fast")
	links := func() int { return strings.Count(inHost(t, w, "ip", "-o", "link"), "nsn-") }
	before := links()
	_, err = cfg.Connect(ns2, "up0", p6("10.0.75.0/24"))
	if !errors.Is(err, nat.ErrForeignTable) || !strings.Contains(fmt.Sprint(err), "older nsnet") {
		t.Errorf("Connect next to an older table: %v, want ErrForeignTable saying so", err)
	}
	if links() != before {
		t.Errorf("the refused Connect left links:\n%s", inHost(t, w, "ip", "-o", "link"))
	}
	if err := l1.Close(); err != nil && !errors.Is(err, os.ErrNotExist) { // (the fast entries went with the set)
		t.Fatal(err)
	}
	if out := nftIn(t, w, "list", "table", "inet", "nsnet"); strings.Contains(out, "owner=") {
		t.Errorf("entries left after Close:\n%s", out)
	}
	nftIn(t, w, "delete table inet nsnet") // not this version's to remove
}

// TestOlderRules: a table with this version's sets but without its newest
// rule was made by an older nsnet: a process of this version (its first
// Connect on the host) refuses it, saying so, rather than connect its
// links without the checks the table lacks.
func TestOlderRules(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "oldr-")
	ns1 := nstest.NewNS(t, "oldr-1")
	nstest.NewNS(t, "oldr-2")
	l1, err := nat.Config{HostNS: w.Host, DNS: nat.DNSNone}.Connect(ns1, "up0", netip.MustParsePrefix("10.0.76.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	helper := func() string {
		out, _ := nstest.Child("TestHelperConnect", "NSNET_HELPER=connect", "NSNET_HELPER_HOST="+w.HostName,
			"NSNET_HELPER_NS=oldr-2", "NSNET_HELPER_PREFIX=10.0.77.0/24", "NSNET_HELPER_CLOSE=1").Output()
		return string(out)
	}
	// Control: with the table as this version makes it, the other
	// process connects (and closes).
	if out := helper(); strings.Contains(out, "older nsnet") || strings.Contains(out, "FAIL") {
		t.Fatalf("control: another process's Connect next to this version's table:\n%s", out)
	}
	m := regexp.MustCompile(`(?m)` + regexp.QuoteMeta(nat.NewestRule) + `" # handle (\d+)$`).FindStringSubmatch(nftIn(t, w, "-a", "list", "chain", "inet", "nsnet", "link_to_host"))
	if m == nil {
		t.Fatal("no newest rule in link_to_host")
	}
	nftIn(t, w, "delete rule inet nsnet link_to_host handle "+m[1])
	links := inHost(t, w, "ip", "-o", "link")
	if out := helper(); !strings.Contains(out, "made by an older nsnet") {
		t.Errorf("another process's Connect next to an older table: want it refused as such, got:\n%s", out)
	}
	if got := inHost(t, w, "ip", "-o", "link"); got != links {
		t.Errorf("the refused Connect left links:\n%s", got)
	}
}
