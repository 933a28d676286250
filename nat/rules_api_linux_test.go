package nat_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/nsnet/nsnet/addr"
	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/route"
	"github.com/nsnet/nsnet/veth"
)

// TestTutorialByHand does every step of the tutorial with its own package,
// the iptables step with AddRules, and checks traffic and the clean-up.
func TestTutorialByHand(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "hand-")
	ns := nstest.NewNS(t, "hand-ns1")
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	before := state(t, w)

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(veth.Create(w.Host, veth.Config{Name: "veth-a", PeerName: "veth-b", PeerNS: ns, Up: true}))
	must(veth.SetUp(ns, "lo"))
	must(addr.Add(w.Host, "veth-a", netip.MustParsePrefix("10.0.0.1/24")))
	must(addr.Add(ns, "veth-b", netip.MustParsePrefix("10.0.0.2/24")))
	must(route.AddDefault(ns, netip.MustParseAddr("10.0.0.1")))
	if nstest.Ping(t, "hand-ns1", "203.0.113.1") {
		t.Fatal("outside reachable before the rules")
	}
	r, err := nat.AddRules(w.Host, "veth-a", "up0", netip.MustParsePrefix("10.0.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if from, err := nstest.Echo(ns, "203.0.113.1:8080"); err != nil || from != "203.0.113.2" {
		t.Errorf("TCP out: %q %v", from, err)
	}
	if _, err := nat.AddRules(w.Host, "veth-a", "up0", netip.MustParsePrefix("10.0.0.0/25")); err == nil {
		t.Error("overlapping rules accepted")
	}
	must(r.Close())
	must(r.Close())
	if nstest.Ping(t, "hand-ns1", "203.0.113.1") {
		t.Error("outside reachable after Close")
	}
	must(veth.Delete(w.Host, "veth-a"))
	if after := state(t, w); after != before {
		t.Errorf("state differs:\n%s\n---\n%s", before, after)
	}
}

// TestAddRulesSweepCloseAllBadInput: the other exported calls refuse bad
// input with the promised errors and change nothing.
func TestAddRulesSweepCloseAllBadInput(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "rbad-")
	nstest.Cmd(t, "ip", "-n", w.HostName, "link", "add", "hv0", "type", "veth", "peer", "name", "hv1")
	closed, _ := netns.NewAnonymous()
	closed.Close()
	before := state(t, w)
	p := netip.MustParsePrefix("10.9.0.0/24")
	for _, c := range []struct {
		name      string
		host      *netns.Handle
		veth, upl string
		cidr      netip.Prefix
		want      error
	}{
		{"missing veth", w.Host, "nope0", "up0", p, os.ErrNotExist},
		{"bad veth name", w.Host, "a:b", "up0", p, nat.ErrInvalidName},
		{"missing uplink", w.Host, "hv0", "nope0", p, os.ErrNotExist},
		{"IPv6 host bits", w.Host, "hv0", "up0", netip.MustParsePrefix("fd00::1/64"), nat.ErrInvalidConfig},
		{"host bits", w.Host, "hv0", "up0", netip.MustParsePrefix("10.9.0.1/24"), nat.ErrInvalidConfig},
		{"closed host", closed, "hv0", "up0", p, netns.ErrClosed},
	} {
		r, err := nat.AddRules(c.host, c.veth, c.upl, c.cidr)
		if err == nil {
			r.Close()
		}
		if !errors.Is(err, c.want) || !strings.HasPrefix(fmt.Sprint(err), "nat: ") {
			t.Errorf("AddRules %s: %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := nat.Sweep(closed); !errors.Is(err, netns.ErrClosed) {
		t.Errorf("Sweep on a closed handle: %v", err)
	}
	if err := nat.CloseAll(); err != nil {
		t.Errorf("CloseAll of nothing: %v", err)
	}
	if err := nat.CloseAll(nil, nil); err != nil {
		t.Errorf("CloseAll of nils: %v", err)
	}
	sameState(t, w, before, "state changed")
}

// TestTwoRules: two Rules live at once in one process, on two links with
// their own prefixes; a third overlapping one is refused as an overlap.
func TestTwoRules(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "two-")
	before := state(t, w)
	var all []*nat.Rules
	for i, name := range []string{"hv-a", "hv-c"} {
		if err := veth.Create(w.Host, veth.Config{Name: name, PeerName: name + "p", Up: true}); err != nil {
			t.Fatal(err)
		}
		defer veth.Delete(w.Host, name)
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 8, byte(i), 0}), 24)
		if err := addr.Add(w.Host, name, netip.PrefixFrom(p.Addr().Next(), 24)); err != nil {
			t.Fatal(err)
		}
		r, err := nat.AddRules(w.Host, name, "up0", p)
		if err != nil {
			t.Fatalf("AddRules %s %v: %v", name, p, err)
		}
		all = append(all, r)
	}
	if _, err := nat.AddRules(w.Host, "hv-c", "up0", netip.MustParsePrefix("10.8.1.0/25")); !errors.Is(err, nat.ErrOverlap) {
		t.Errorf("overlapping third: %v, want ErrOverlap", err)
	}
	for _, r := range all {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	}
	for _, name := range []string{"hv-a", "hv-c"} {
		if err := veth.Delete(w.Host, name); err != nil {
			t.Fatal(err)
		}
	}
	sameState(t, w, before, "state differs")
}

// TestAddRulesFault: AddRules failing after it turned the link's forwarding
// on (here at the table) leaves the host as it was, forwarding included.
func TestAddRulesFault(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "rflt-")
	if err := veth.Create(w.Host, veth.Config{Name: "rf-a", PeerName: "rf-b", Up: true}); err != nil {
		t.Fatal(err)
	}
	defer veth.Delete(w.Host, "rf-a")
	before := state(t, w)
	nat.SetFailHook(failAt("nftables table"))
	r, err := nat.AddRules(w.Host, "rf-a", "up0", netip.MustParsePrefix("10.0.0.0/24"))
	nat.SetFailHook(nil)
	if !errors.Is(err, errInjected) {
		t.Fatalf("AddRules = %v, %v; want the injected fault", r, err)
	}
	sameState(t, w, before, "state changed")
}

// TestTutorialByHandIPv6: the same by hand for IPv6: AddRules with an IPv6
// prefix masquerades and forwards it (the link's and the uplink's
// force_forwarding), and Close puts both back.
func TestTutorialByHandIPv6(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "hand6-")
	ns := nstest.NewNS(t, "hand6-ns")
	nstest.Listen(t, w.Inet, "[2001:db8::1]:8080")
	before := state(t, w)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(veth.Create(w.Host, veth.Config{Name: "veth6-a", PeerName: "veth6-b", PeerNS: ns, Up: true}))
	must(addr.Config{NoDAD: true}.Add(w.Host, "veth6-a", netip.MustParsePrefix("fd00:77::1/64")))
	must(addr.Config{NoDAD: true}.Add(ns, "veth6-b", netip.MustParsePrefix("fd00:77::2/64")))
	must(route.AddDefault(ns, netip.MustParseAddr("fd00:77::1")))
	if nstest.Ping(t, "hand6-ns", "2001:db8::1") {
		t.Fatal("outside reachable before the rules")
	}
	r, err := nat.AddRules(w.Host, "veth6-a", "up0", netip.MustParsePrefix("fd00:77::/64"))
	if err != nil {
		t.Fatal(err)
	}
	if from, err := nstest.Echo(ns, "[2001:db8::1]:8080"); err != nil || from != "2001:db8::2" {
		t.Errorf("TCP out: %q %v", from, err)
	}
	key := "net.ipv6.conf.veth6-a.force_forwarding"
	if ipv6Global {
		key = "net.ipv6.conf.all.forwarding" // (before 6.17)
	}
	if got := sysctl(t, w, key); got != "1" {
		t.Errorf("%s = %s", key, got)
	}
	must(r.Close())
	for _, k := range []string{key, "net.ipv6.conf.up0.force_forwarding"} {
		if got := sysctl(t, w, k); got != "0" {
			t.Errorf("after Close: %s = %s", k, got)
		}
	}
	must(veth.Delete(w.Host, "veth6-a"))
	sameState(t, w, before, "after Close")
}
