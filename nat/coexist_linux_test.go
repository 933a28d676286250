package nat_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nstest"
)

// TestForeignDropPolicy: on a host whose ip filter FORWARD chain drops by
// policy (as Docker sets it with iptables-nft), Connect refuses by default
// and names the chain; with AllowForeignDrop it connects, the traffic
// flows once the user accepts it in their chain, and their table is
// byte-identical after Close.
func TestForeignDropPolicy(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "dock-")
	nft := func(args ...string) string {
		return nstest.Cmd(t, "ip", append([]string{"netns", "exec", w.HostName, "nft"}, args...)...)
	}
	nft("add table ip filter; add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }")
	userTable := nft("-j", "list", "table", "ip", "filter")
	before := state(t, w)
	ns := nstest.NewNS(t, "dock-ns")
	p := netip.MustParsePrefix("10.8.0.0/24")
	_, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", p)
	if !errors.Is(err, nat.ErrForeignDrop) || !strings.Contains(err.Error(), "ip filter FORWARD") {
		t.Fatalf("Connect: %v, want ErrForeignDrop naming ip filter FORWARD", err)
	}
	if after := state(t, w); after != before {
		t.Errorf("refused Connect changed state:\n%s\n---\n%s", before, after)
	}
	l, err := nat.Config{HostNS: w.Host, AllowForeignDrop: true}.Connect(ns, "up0", p)
	if err != nil {
		t.Fatal(err)
	}
	if nstest.Ping(t, "dock-ns", "203.0.113.1") {
		t.Error("traffic passed a drop policy: the test proves nothing")
	}
	nft(`insert rule ip filter FORWARD iifname "nsn-*" accept`)
	nft(`insert rule ip filter FORWARD oifname "nsn-*" ct state established,related accept`)
	if !nstest.Ping(t, "dock-ns", "203.0.113.1") {
		t.Error("no traffic with the user's accept rules")
	}
	withRules := nft("-j", "list", "table", "ip", "filter")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if after := nft("-j", "list", "table", "ip", "filter"); after != withRules || withRules == userTable {
		t.Errorf("user's table changed by Close:\n%s\n---\n%s", withRules, after)
	}
}

// TestForeignDropShapes: the other firewalls' shapes that silently killed
// the links' traffic are refused with ErrForeignDrop naming the chain
// (issue 12, part 4): firewalld's final reject, iptables-nft's final DROP
// rule, iptables-legacy's FORWARD policy DROP, and a drop policy that
// appears while links are live. A host with no legacy table does not get
// one from the check.
func TestForeignDropShapes(t *testing.T) {
	requireTools(t)
	nstest.RequireCmd(t, "iptables-legacy")
	nstest.RequireCmd(t, "iptables-nft")
	for _, c := range []struct {
		name, want string
		setup      []string
	}{
		{"firewalld reject", "inet firewalld filter_FORWARD", []string{"nft",
			"add table inet firewalld; add chain inet firewalld filter_FORWARD { type filter hook forward priority filter + 10; policy accept; }; " +
				"add rule inet firewalld filter_FORWARD ct state established,related accept; add rule inet firewalld filter_FORWARD reject with icmpx admin-prohibited"}},
		{"iptables-nft DROP rule", "ip filter FORWARD", []string{"iptables-nft", "-A", "FORWARD", "-j", "DROP"}},
		{"iptables-legacy policy", "legacy iptables filter FORWARD", []string{"iptables-legacy", "-P", "FORWARD", "DROP"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := nstest.NewWorld(t, "shp-")
			ns := nstest.NewNS(t, "shp-ns")
			nstest.Cmd(t, "ip", append([]string{"netns", "exec", w.HostName}, c.setup...)...)
			before := state(t, w)
			_, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix("10.14.0.0/24"))
			if !errors.Is(err, nat.ErrForeignDrop) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Connect: %v, want ErrForeignDrop naming %s", err, c.want)
			}
			sameState(t, w, before, "refused Connect changed state")
		})
	}
	t.Run("drop policy after the first Connect", func(t *testing.T) {
		w := nstest.NewWorld(t, "late-")
		ns1, ns2 := nstest.NewNS(t, "late-ns1"), nstest.NewNS(t, "late-ns2")
		l, err := nat.Config{HostNS: w.Host}.Connect(ns1, "up0", netip.MustParsePrefix("10.14.1.0/24"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if names := nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "cat", "/proc/net/ip_tables_names"); names != "" {
			t.Errorf("the check made legacy tables: %q", names)
		}
		nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft",
			"add table ip late; add chain ip late fwdchain { type filter hook forward priority 0; policy drop; }")
		if _, err := (nat.Config{HostNS: w.Host}).Connect(ns2, "up0", netip.MustParsePrefix("10.14.2.0/24")); !errors.Is(err, nat.ErrForeignDrop) {
			t.Errorf("Connect after a drop policy appeared: %v, want ErrForeignDrop", err)
		}
	})
}
