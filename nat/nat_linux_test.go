package nat_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// TestMain runs the tests as on a kernel before Linux 6.17 (IPv6 forwarded
// by the global switch: see Config.IPv6GlobalForwarding) when
// NSNET_IPV6_GLOBAL=1; CI runs the IPv6 tests so too.
func TestMain(m *testing.M) {
	nat.SetIPv6GlobalMode(ipv6Global)
	nstest.Main(m)
}

// ipv6Global: see TestMain.
var ipv6Global = os.Getenv("NSNET_IPV6_GLOBAL") == "1"

// state is everything Close must restore, read with independent tools
// (right after Close: it returns when nothing of the link is left).
func state(t *testing.T, w *nstest.World) string {
	t.Helper()
	in := func(args ...string) string { return inHost(t, w, args...) }
	return nstest.Steady(strings.Join([]string{
		in("ip", "-d", "link"), in("ip", "-4", "addr"), in("ip", "-4", "route", "show", "table", "all"),
		in("ip", "-6", "addr"), in("ip", "-6", "route", "show", "table", "all"),
		in("nft", "list", "ruleset"),
		in("sh", "-c", "grep . /proc/sys/net/ipv4/conf/*/forwarding /proc/sys/net/ipv4/ip_forward "+
			"/proc/sys/net/ipv6/conf/*/forwarding /proc/sys/net/ipv6/conf/*/force_forwarding /proc/sys/net/ipv6/conf/*/accept_ra"),
	}, "\n---\n"))
}

// sameState fails t if the host no longer reads as before (see state),
// showing the lines that changed.
func sameState(t *testing.T, w *nstest.World, before, what string) {
	t.Helper()
	if after := state(t, w); after != before {
		t.Errorf("%s:\n%s", what, lineDiff(before, after))
	}
}

func requireTools(t *testing.T) {
	nstest.Require(t)
	for _, c := range []string{"ip", "nft", "ping"} {
		nstest.RequireCmd(t, c)
	}
}

// TestTutorial is the tutorial end to end: example-ns1 connected to a fake
// internet through NAT with one call, checked with ping, TCP, nft and ip.
func TestTutorial(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "tut-")
	ns := nstest.NewNS(t, "example-ns1")
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	before := state(t, w)

	// Control: nothing reaches out before Connect.
	if nstest.Ping(t, "example-ns1", "203.0.113.1") {
		t.Fatal("outside reachable before Connect")
	}
	if _, err := nstest.Echo(ns, "203.0.113.1:8080"); err == nil {
		t.Fatal("TCP reached outside before Connect")
	}

	l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix("10.0.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if l.HostAddr.String() != "10.0.0.1/24" || l.NSAddr.String() != "10.0.0.2/24" || l.NSVeth != "eth0" || l.Uplink != "up0" {
		t.Errorf("link: %+v", l)
	}
	if !nstest.Ping(t, "example-ns1", "10.0.0.1") {
		t.Error("ping 10.0.0.1 failed")
	}
	if !nstest.Ping(t, "example-ns1", "203.0.113.1") {
		t.Error("ping 203.0.113.1 failed")
	}
	from, err := nstest.Echo(ns, "203.0.113.1:8080")
	if err != nil || from != "203.0.113.2" {
		t.Errorf("TCP to the outside: seen from %q (want the uplink's 203.0.113.2), %v", from, err)
	}

	// The ruleset holds the masquerade and forward rules and this link's
	// elements; forwarding is on for the uplink and the host end only.
	rules := nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft", "list", "ruleset")
	for _, want := range []string{"table inet nsnet", "masquerade", "hook forward", "hook postrouting",
		"ct state established,related accept", "fib saddr . iif oif missing drop",
		"elements = { \"" + l.HostVeth + "\" comment", "\"" + l.HostVeth + "\" . \"up0\" . ipv4 comment", "10.0.0.0 . 24 comment \"nsnet owner="} {
		if !strings.Contains(rules, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, rules)
		}
	}
	fwd := func(dev string) string {
		return strings.TrimSpace(nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "cat", "/proc/sys/net/ipv4/conf/"+dev+"/forwarding"))
	}
	global := strings.TrimSpace(nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "cat", "/proc/sys/net/ipv4/ip_forward"))
	if fwd("up0") != "1" || fwd(l.HostVeth) != "1" || fwd("lo") != "0" || global != "0" {
		t.Errorf("forwarding: up0 %s, %s %s, lo %s, global %s", fwd("up0"), l.HostVeth, fwd(l.HostVeth), fwd("lo"), global)
	}
	// The host end has no IPv6 (see Connect's doc); the namespace's end
	// keeps its own.
	in := func(ns string, args ...string) string {
		return strings.TrimSpace(nstest.Cmd(t, "ip", append([]string{"netns", "exec", ns}, args...)...))
	}
	if v := in(w.HostName, "cat", "/proc/sys/net/ipv6/conf/"+l.HostVeth+"/disable_ipv6"); v != "1" {
		t.Errorf("host end disable_ipv6 = %s, want 1", v)
	}
	if a := in(w.HostName, "ip", "-6", "addr", "show", "dev", l.HostVeth); a != "" {
		t.Errorf("host end has IPv6 addresses:\n%s", a)
	}
	if v := in("example-ns1", "cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"); v != "0" {
		t.Errorf("namespace end disable_ipv6 = %s, want 0", v)
	}
	alias := nstest.Cmd(t, "ip", "-n", w.HostName, "link", "show", l.HostVeth)
	if !strings.Contains(alias, "alias nsnet owner=") {
		t.Errorf("host veth has no owner mark:\n%s", alias)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if after := state(t, w); after != before {
		t.Errorf("state after Close differs:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if nstest.Ping(t, "example-ns1", "203.0.113.1") {
		t.Error("outside still reachable after Close")
	}
}

// TestThreeLinks: three namespaces at once all reach out, closing one
// leaves the others working, an overlapping prefix is refused, and the
// rule count does not grow with the links.
func TestThreeLinks(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "three-")
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	before := state(t, w)
	var links []*nat.Link
	var nss []*netns.Handle
	rulesWith := map[int]int{}
	for i := range 3 {
		ns := nstest.NewNS(t, fmt.Sprintf("three-ns%d", i))
		l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix(fmt.Sprintf("10.0.%d.0/24", i)))
		if err != nil {
			t.Fatal(err)
		}
		links, nss = append(links, l), append(nss, ns)
		rulesWith[i+1] = countRules(t, w)
	}
	if rulesWith[1] != rulesWith[3] {
		t.Errorf("rules: %d with one link, %d with three", rulesWith[1], rulesWith[3])
	}
	other := nstest.NewNS(t, "three-other")
	if _, err := (nat.Config{HostNS: w.Host}).Connect(other, "up0", netip.MustParsePrefix("10.0.1.128/25")); !errors.Is(err, nat.ErrOverlap) {
		t.Errorf("overlapping prefix: %v, want ErrOverlap", err)
	}
	for i, ns := range nss {
		if from, err := nstest.Echo(ns, "203.0.113.1:8080"); err != nil || from != "203.0.113.2" {
			t.Errorf("ns%d: %q %v", i, from, err)
		}
	}
	if err := links[1].Close(); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2} {
		if _, err := nstest.Echo(nss[i], "203.0.113.1:8080"); err != nil {
			t.Errorf("ns%d after closing ns1: %v", i, err)
		}
	}
	if _, err := nstest.Echo(nss[1], "203.0.113.1:8080"); err == nil {
		t.Errorf("ns1 still reaches out after Close")
	}
	links[0].Close()
	links[2].Close()
	if after := state(t, w); after != before {
		t.Errorf("state after Close differs:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func countRules(t *testing.T, w *nstest.World) int {
	var rs struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	out := nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft", "-j", "list", "ruleset")
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, o := range rs.Nftables {
		if _, ok := o["rule"]; ok {
			n++
		}
	}
	return n
}

// TestForeignTableUntouched: a user's own table is byte-identical after
// Connect and Close.
func TestForeignTableUntouched(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "foreign-")
	nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft", "add table inet mine; add chain inet mine userfwd { type filter hook forward priority 10; policy accept; }; add rule inet mine userfwd ip saddr 192.0.2.0/24 counter accept comment \"users rule\"")
	list := func() string {
		return nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft", "-j", "list", "table", "inet", "mine")
	}
	before := list()
	ns := nstest.NewNS(t, "foreign-ns")
	l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix("10.9.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if !nstest.Ping(t, "foreign-ns", "203.0.113.1") {
		t.Error("ping failed next to a foreign table")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if after := list(); after != before {
		t.Errorf("user's table changed:\n%s\n---\n%s", before, after)
	}
}

// TestBadInput: each refusal is a clear error and changes nothing.
func TestBadInput(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "bad-")
	ns := nstest.NewNS(t, "bad-ns")
	closed, _ := netns.NewAnonymous()
	closed.Close()
	nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "ip", "route", "add", "198.51.100.0/24", "via", "203.0.113.1")
	nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "ip", "link", "add", "down0", "type", "veth", "peer", "name", "down1")
	nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "ip", "link", "add", "nov4", "type", "veth", "peer", "name", "nov4p")
	nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "ip", "link", "set", "nov4", "up")
	before := state(t, w)
	p := netip.MustParsePrefix
	cfg := nat.Config{HostNS: w.Host}
	for _, c := range []struct {
		name   string
		ns     *netns.Handle
		cfg    nat.Config
		uplink string
		cidr   netip.Prefix
		want   error
		says   string
	}{
		{"nil namespace", nil, cfg, "up0", p("10.0.0.0/24"), nat.ErrInvalidConfig, "nil"},
		{"host namespace", w.Host, cfg, "up0", p("10.0.0.0/24"), nat.ErrInvalidConfig, "host namespace"},
		{"closed namespace", closed, cfg, "up0", p("10.0.0.0/24"), netns.ErrClosed, "closed"},
		{"missing uplink", ns, cfg, "nope0", p("10.0.0.0/24"), os.ErrNotExist, `uplink "nope0" does not exist`},
		{"missing uplink, the candidates", ns, cfg, "nope0", p("10.0.0.0/24"), os.ErrNotExist, "links up there: nov4, up0)"},
		{"bad uplink name", ns, cfg, "bad/name", p("10.0.0.0/24"), nat.ErrInvalidName, "bad/name"},
		{"uplink down", ns, cfg, "down0", p("10.0.0.0/24"), nil, "down"},
		{"uplink without IPv4", ns, cfg, "nov4", p("10.0.0.0/24"), nil, "no IPv4 address"},
		{"pool too coarse", ns, nat.Config{HostNS: w.Host, Pool: p("10.0.0.0/8"), PoolBits: 4}, "up0", netip.Prefix{}, nat.ErrInvalidConfig, "cannot be cut"},
		{"pool with host bits", ns, nat.Config{HostNS: w.Host, Pool: p("10.9.0.1/24")}, "up0", netip.Prefix{}, nat.ErrInvalidConfig, "pool"},
		{"pool of /31s", ns, nat.Config{HostNS: w.Host, Pool: p("10.9.0.0/24"), PoolBits: 31}, "up0", netip.Prefix{}, nat.ErrInvalidConfig, "/30"},
		{"IPv6 host bits", ns, cfg, "up0", p("fd00::1/64"), nat.ErrInvalidConfig, "host bits"},
		{"IPv6 too small", ns, cfg, "up0", p("fd00::/127"), nat.ErrInvalidConfig, "room for two hosts"},
		{"single address without gateway", ns, cfg, "up0", p("10.0.0.5/32"), nat.ErrInvalidConfig, "give the host end's address"},
		{"single address, its own gateway", ns, nat.Config{HostNS: w.Host, HostAddr: netip.MustParseAddr("10.0.0.5")}, "up0", p("10.0.0.5/32"), nat.ErrInvalidConfig, "cannot be the gateway"},
		{"single IPv6 address without gateway", ns, cfg, "up0", p("fd00::5/128"), nat.ErrInvalidConfig, "HostAddr6"},
		{"IPv6 too large", ns, cfg, "up0", p("fd00::/16"), nat.ErrInvalidConfig, "larger than /32"},
		{"IPv6 link-local", ns, cfg, "up0", p("fe80::/64"), nat.ErrInvalidConfig, "link-local"},
		{"IPv4-mapped", ns, cfg, "up0", p("::ffff:10.0.0.0/120"), nat.ErrInvalidConfig, "not an IPv4 prefix"},
		{"IPv6 multicast", ns, cfg, "up0", p("ff05::/64"), nat.ErrInvalidConfig, "multicast"},
		{"Prefix6 not IPv6", ns, nat.Config{HostNS: w.Host, Prefix6: p("10.1.0.0/24")}, "up0", p("10.0.0.0/24"), nat.ErrInvalidConfig, "not an IPv6 prefix"},
		{"two IPv6 prefixes", ns, nat.Config{HostNS: w.Host, Prefix6: p("fd00:1::/64")}, "up0", p("fd00:2::/64"), nat.ErrInvalidConfig, "give the IPv4 prefix"},
		{"HostAddr6 without Prefix6", ns, nat.Config{HostNS: w.Host, HostAddr6: netip.MustParseAddr("fd00::1")}, "up0", p("10.0.0.0/24"), nat.ErrInvalidConfig, "no IPv6 prefix"},
		{"HostAddr on an IPv6-only link", ns, nat.Config{HostNS: w.Host, HostAddr: netip.MustParseAddr("fd00::1")}, "up0", p("fd00::/64"), nat.ErrInvalidConfig, "no IPv4 prefix"},
		{"IPv6 address outside prefix", ns, nat.Config{HostNS: w.Host, NSAddr6: netip.MustParseAddr("fd00:9::2")}, "up0", p("fd00::/64"), nat.ErrInvalidConfig, "not a host address"},
		{"IPv6 subnet-router anycast", ns, nat.Config{HostNS: w.Host, HostAddr6: netip.MustParseAddr("fd00::")}, "up0", p("fd00::/64"), nat.ErrInvalidConfig, "not a host address"},
		{"IPv6 MTU", ns, nat.Config{HostNS: w.Host, MTU: 1000}, "up0", p("fd00::/64"), nat.ErrInvalidConfig, "1280"},
		{"multicast NSMAC", ns, nat.Config{HostNS: w.Host, NSMAC: net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}}, "up0", p("10.0.0.0/24"), nat.ErrInvalidConfig, "not a unicast"},
		{"zero NSMAC", ns, nat.Config{HostNS: w.Host, NSMAC: make(net.HardwareAddr, 6)}, "up0", p("10.0.0.0/24"), nat.ErrInvalidConfig, "not a unicast"},
		{"short NSMAC", ns, nat.Config{HostNS: w.Host, NSMAC: net.HardwareAddr{2, 0, 0}}, "up0", p("10.0.0.0/24"), nat.ErrInvalidConfig, "not a unicast"},
		{"an IPv4 port on an IPv6-only link", ns, nat.Config{HostNS: w.Host, Ports: []nat.Port{{Protocol: "tcp", HostAddr: netip.MustParseAddr("203.0.113.2"), HostPort: 80}}}, "up0", p("fd00::/64"), nat.ErrInvalidConfig, "no IPv4 network"},
		{"uplink without global IPv6", ns, cfg, "nov4", p("fd00::/64"), nil, "no global IPv6 address"},
		{"IPv6 overlaps uplink address", ns, cfg, "up0", p("2001:db8::/64"), nat.ErrOverlap, "2001:db8::"},
		{"IPv6 inside uplink's network", ns, cfg, "up0", p("2001:db8::100/120"), nat.ErrOverlap, "2001:db8::"},
		{"host bits", ns, cfg, "up0", p("10.0.0.1/24"), nat.ErrInvalidConfig, "host bits"},
		{"too small", ns, cfg, "up0", p("10.0.0.0/31"), nat.ErrInvalidConfig, "room for two hosts"},
		{"loopback", ns, cfg, "up0", p("127.1.0.0/24"), nat.ErrInvalidConfig, "loopback"},
		{"multicast", ns, cfg, "up0", p("224.1.0.0/24"), nat.ErrInvalidConfig, "multicast"},
		{"link-local", ns, cfg, "up0", p("169.254.1.0/24"), nat.ErrInvalidConfig, "link-local"},
		{"overlaps uplink address", ns, cfg, "up0", p("203.0.113.0/25"), nat.ErrOverlap, "203.0.113"},
		{"overlaps host route", ns, cfg, "up0", p("198.51.100.0/24"), nat.ErrOverlap, "198.51.100.0/24"},
		{"address outside prefix", ns, nat.Config{HostNS: w.Host, HostAddr: netip.MustParseAddr("10.1.0.1")}, "up0", p("10.0.0.0/24"), nat.ErrInvalidConfig, "not a host address"},
		{"same addresses", ns, nat.Config{HostNS: w.Host, HostAddr: netip.MustParseAddr("10.0.0.5"), NSAddr: netip.MustParseAddr("10.0.0.5")}, "up0", p("10.0.0.0/24"), nat.ErrInvalidConfig, "both"},
		{"long veth name", ns, nat.Config{HostNS: w.Host, HostVeth: "sixteen-bytes-xx"}, "up0", p("10.0.0.0/24"), nat.ErrInvalidName, "sixteen"},
		{"existing veth name", ns, nat.Config{HostNS: w.Host, HostVeth: "up0"}, "up0", p("10.0.0.0/24"), os.ErrExist, "up0"},
	} {
		_, err := c.cfg.Connect(c.ns, c.uplink, c.cidr)
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.says) || !strings.HasPrefix(err.Error(), "nat: ") {
			t.Errorf("%s: %v, want %v saying %q", c.name, err, c.want, c.says)
		}
	}
	// Connecting the same namespace twice is refused.
	l, err := cfg.Connect(ns, "up0", p("10.0.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Connect(ns, "up0", p("10.7.0.0/24")); !errors.Is(err, os.ErrExist) || !strings.Contains(err.Error(), "namespace bad-ns net:[") {
		t.Errorf("second Connect of one namespace: %v, want ErrExist naming bad-ns", err)
	}
	l.Close()
	if after := state(t, w); after != before {
		t.Errorf("state changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// lineDiff lists the lines only one side has: enough to read what changed
// in a state dump.
func lineDiff(before, after string) string {
	count := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(s, "\n") {
			m[l]++
		}
		return m
	}
	b, a := count(before), count(after)
	var out []string
	for _, l := range strings.Split(before, "\n") {
		if a[l] < b[l] {
			out = append(out, "- "+l)
			a[l]++
		}
	}
	b, a = count(before), count(after)
	for _, l := range strings.Split(after, "\n") {
		if b[l] < a[l] {
			out = append(out, "+ "+l)
			b[l]++
		}
	}
	return strings.Join(out, "\n")
}
