package nat_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/nsnet/nsnet/internal/sandbox"
	"github.com/nsnet/nsnet/internal/testnet"
	"github.com/nsnet/nsnet/nat"
)

// TestForeignDropPolicy: on a host whose ip filter FORWARD chain drops by
// policy (as Docker sets it with iptables-nft), Connect refuses by default
// and names the chain; with AllowForeignDrop it connects, the traffic
// flows once the user accepts it in their chain, and their table is
// byte-identical after Close.
func TestForeignDropPolicy(t *testing.T) {
	requireTools(t)
	w := testnet.NewWorld(t, "dock-")
	nft := func(args ...string) string {
		return sandbox.Cmd(t, "ip", append([]string{"netns", "exec", w.HostName, "nft"}, args...)...)
	}
	nft("add table ip filter; add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }")
	userTable := nft("-j", "list", "table", "ip", "filter")
	before := state(t, w)
	ns := testnet.NewNS(t, "dock-ns")
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
	if testnet.Ping(t, "dock-ns", "203.0.113.1") {
		t.Error("traffic passed a drop policy: the test proves nothing")
	}
	nft(`insert rule ip filter FORWARD iifname "nsn-*" accept`)
	nft(`insert rule ip filter FORWARD oifname "nsn-*" ct state established,related accept`)
	if !testnet.Ping(t, "dock-ns", "203.0.113.1") {
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
