package nat_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"golang.org/x/sys/unix"
)

// sysctl reads a sysctl of the world's host namespace.
func sysctl(t *testing.T, w *nstest.World, key string) string {
	t.Helper()
	return strings.TrimSpace(nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "sysctl", "-n", key))
}

// setSysctl sets a sysctl of the world's host namespace.
func setSysctl(t *testing.T, w *nstest.World, key, v string) {
	t.Helper()
	nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "sysctl", "-qw", key+"="+v)
}

// serve6 starts the outside host's TCP echo server on [2001:db8::1]:8080.
func serve6(t *testing.T, w *nstest.World) string {
	t.Helper()
	a := netip.AddrPortFrom(w.Outside6, 8080).String()
	nstest.Listen(t, w.Inet, a)
	return a
}

// inet runs a command in the outside host's namespace.
func inet(t *testing.T, w *nstest.World, args ...string) string {
	t.Helper()
	return nstest.Cmd(t, "ip", append([]string{"netns", "exec", w.InetName}, args...)...)
}

// watch6 counts, on the outside host, the IPv6 packets that arrive from
// each of srcs; count6 reads a counter.
func watch6(t *testing.T, w *nstest.World, srcs ...string) {
	t.Helper()
	cmd := "add table ip6 watch6; add chain ip6 watch6 in { type filter hook prerouting priority -300; }"
	for _, s := range srcs {
		cmd += "; add rule ip6 watch6 in ip6 saddr " + s + " counter"
	}
	inet(t, w, "nft", cmd)
}

func count6(t *testing.T, w *nstest.World, src string) int {
	t.Helper()
	out := inet(t, w, "nft", "list", "chain", "ip6", "watch6", "in")
	m := regexp.MustCompile(`ip6 saddr ` + regexp.QuoteMeta(src) + ` counter packets (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no counter for %s:\n%s", src, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

var p6 = netip.MustParsePrefix

// v6Forwards reads whether the host forwards IPv6 out of up0 as nsnet
// turns it on: up0's force_forwarding, or before 6.17 (ipv6Global) the
// global switch.
func v6Forwards(t *testing.T, w *nstest.World) bool {
	t.Helper()
	if ipv6Global {
		return sysctl(t, w, "net.ipv6.conf.all.forwarding") == "1"
	}
	return sysctl(t, w, "net.ipv6.conf.up0.force_forwarding") == "1"
}

// TestIPv6Masquerade: a dual-stack link reaches the outside host in both
// families, by ping and TCP, seen from the uplink's addresses; only the
// uplink's and the host end's IPv6 forwarding are turned on (never the
// global switch), and Close puts every setting back.
func TestIPv6Masquerade(t *testing.T) {
	w := nstest.NewWorld(t, "v6m-")
	ns := nstest.NewNS(t, "v6m-ns")
	before := state(t, w)
	dst := serve6(t, w)
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	l, err := nat.Config{HostNS: w.Host, Prefix6: p6("fd00:1::/64")}.Connect(ns, "up0", p6("10.6.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got, want := l.String(), "10.6.0.0/24, fd00:1::/64: host "+l.HostVeth+" (10.6.0.1, fd00:1::1) <-> namespace eth0 (10.6.0.2, fd00:1::2), uplink up0"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if l.NSAddr6 != p6("fd00:1::2/64") || l.HostAddr6 != p6("fd00:1::1/64") || l.Prefix6 != p6("fd00:1::/64") {
		t.Errorf("link fields %v %v %v", l.Prefix6, l.HostAddr6, l.NSAddr6)
	}
	// Usable when Connect returns: no tentative address on either end.
	if out := nstest.Cmd(t, "ip", "-n", "v6m-ns", "-6", "addr", "show", "dev", "eth0", "scope", "global"); strings.Contains(out, "tentative") || !strings.Contains(out, "fd00:1::2/64") {
		t.Errorf("namespace's address:\n%s", out)
	}
	if !nstest.Ping(t, "v6m-ns", "2001:db8::1") {
		t.Error("ping -6 2001:db8::1 failed")
	}
	if !nstest.Ping(t, "v6m-ns", "203.0.113.1") {
		t.Error("ping 203.0.113.1 failed")
	}
	if seen, err := nstest.Echo(ns, dst); err != nil || seen != "2001:db8::2" {
		t.Errorf("TCP over IPv6: seen from %q, %v; want 2001:db8::2", seen, err)
	}
	if seen, err := nstest.Echo(ns, "203.0.113.1:8080"); err != nil || seen != "203.0.113.2" {
		t.Errorf("TCP over IPv4: seen from %q, %v", seen, err)
	}
	want := map[string]string{
		"net.ipv6.conf.up0.force_forwarding":                "1",
		"net.ipv6.conf." + l.HostVeth + ".force_forwarding": "1",
		"net.ipv6.conf.all.forwarding":                      "0",
		"net.ipv6.conf.up0.forwarding":                      "0",
		"net.ipv6.conf.up0.accept_ra":                       "1",
	}
	if ipv6Global {
		// Before 6.17: the global switch, with router advertisements
		// still accepted (accept_ra 2) where they were.
		want = map[string]string{
			"net.ipv6.conf.up0.force_forwarding": "0",
			"net.ipv6.conf.all.forwarding":       "1",
			"net.ipv6.conf.default.accept_ra":    "2",
			"net.ipv6.conf.up0.accept_ra":        "2",
		}
	}
	for key, want := range want {
		if got := sysctl(t, w, key); got != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if nstest.Ping(t, "v6m-ns", "2001:db8::1") {
		t.Error("ping -6 works after Close")
	}
	sameState(t, w, before, "after Close")
}

// TestIPv6Only: an IPv6 prefix as Connect's cidr makes an IPv6-only link
// (no IPv4 anywhere on it); the uplink's IPv4 forwarding stays off.
func TestIPv6Only(t *testing.T) {
	w := nstest.NewWorld(t, "v6o-")
	ns := nstest.NewNS(t, "v6o-ns")
	dst := serve6(t, w)
	l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", p6("fd00:2::/64"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Prefix.IsValid() || l.Prefix6 != p6("fd00:2::/64") {
		t.Errorf("Prefix %v, Prefix6 %v", l.Prefix, l.Prefix6)
	}
	if seen, err := nstest.Echo(ns, dst); err != nil || seen != "2001:db8::2" {
		t.Errorf("TCP over IPv6: seen from %q, %v", seen, err)
	}
	if out := nstest.Cmd(t, "ip", "-n", "v6o-ns", "-4", "addr", "show", "dev", "eth0"); strings.TrimSpace(out) != "" {
		t.Errorf("IPv4 address in the namespace:\n%s", out)
	}
	if got := sysctl(t, w, "net.ipv4.conf.up0.forwarding"); got != "0" {
		t.Errorf("uplink IPv4 forwarding %s", got)
	}
	if nstest.Ping(t, "v6o-ns", "203.0.113.1") {
		t.Error("IPv4 reached the outside from an IPv6-only link")
	}
}

// TestIPv6Routed: RoutedIPv6 forwards the namespace's own IPv6 address
// (the outside routes the prefix to the host), while IPv4 of the same link
// stays masqueraded; RoutedIPv4 does the same for IPv4. Nothing comes in
// unsolicited either way.
func TestIPv6Routed(t *testing.T) {
	w := nstest.NewWorld(t, "v6r-")
	ns := nstest.NewNS(t, "v6r-ns")
	dst := serve6(t, w)
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	inet(t, w, "ip", "-6", "route", "add", "2001:db8:1::/64", "via", "2001:db8::2")
	inet(t, w, "ip", "route", "add", "192.0.2.0/24", "via", "203.0.113.2")
	l, err := nat.Config{HostNS: w.Host, Prefix6: p6("2001:db8:1::/64"), RoutedIPv6: true}.Connect(ns, "up0", p6("10.6.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if seen, err := nstest.Echo(ns, dst); err != nil || seen != "2001:db8:1::2" {
		t.Errorf("routed IPv6: seen from %q, %v; want 2001:db8:1::2", seen, err)
	}
	if seen, err := nstest.Echo(ns, "203.0.113.1:8080"); err != nil || seen != "203.0.113.2" {
		t.Errorf("masqueraded IPv4 beside routed IPv6: seen from %q, %v", seen, err)
	}
	// The outside routes to the namespace, and still cannot open a
	// connection to it: nothing unsolicited.
	nstest.Listen(t, ns, "[2001:db8:1::2]:7070")
	if _, err := nstest.Echo(w.Inet, "[2001:db8:1::2]:7070"); err == nil {
		t.Error("the outside opened a connection to a routed namespace")
	}
	if nstest.Ping(t, w.InetName, "2001:db8:1::2") {
		t.Error("the outside pinged a routed namespace")
	}
	l.Close()

	ns2 := nstest.NewNS(t, "v6r-ns2")
	l2, err := nat.Config{HostNS: w.Host, RoutedIPv4: true}.Connect(ns2, "up0", p6("192.0.2.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if seen, err := nstest.Echo(ns2, "203.0.113.1:8080"); err != nil || seen != "192.0.2.2" {
		t.Errorf("routed IPv4: seen from %q, %v; want 192.0.2.2", seen, err)
	}
	if nstest.Ping(t, w.InetName, "192.0.2.2") {
		t.Error("the outside pinged a routed IPv4 namespace")
	}
}

// TestIPv6Isolation: with IPv6 the same guarantees as IPv4. Nothing
// unsolicited reaches a masqueraded namespace even when the outside
// routes its prefix to the host; a spoofed source never leaves; two links
// cannot reach each other unless both allow it.
func TestIPv6Isolation(t *testing.T) {
	w := nstest.NewWorld(t, "v6i-")
	a, b, c := nstest.NewNS(t, "v6i-a"), nstest.NewNS(t, "v6i-b"), nstest.NewNS(t, "v6i-c")
	connect := func(ns *netns.Handle, p string, siblings bool) *nat.Link {
		l, err := nat.Config{HostNS: w.Host, AllowSiblings: siblings}.Connect(ns, "up0", p6(p))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	connect(a, "fd00:a::/64", false)
	connect(b, "fd00:b::/64", true)
	connect(c, "fd00:c::/64", true)

	// Unsolicited: the outside host routes the prefix to the host.
	inet(t, w, "ip", "-6", "route", "add", "fd00:a::/64", "via", "2001:db8::2")
	nstest.Listen(t, a, "[fd00:a::2]:7070")
	if nstest.Ping(t, w.InetName, "fd00:a::2") {
		t.Error("the outside pinged a namespace unsolicited")
	}
	if _, err := nstest.Echo(w.Inet, "[fd00:a::2]:7070"); err == nil {
		t.Error("the outside opened a connection to a namespace")
	}

	// Spoofed: a source of no network of the link never leaves.
	watch6(t, w, "2001:db8:99::5", "2001:db8::2")
	// (deprecated: never picked as a source by itself)
	nstest.Cmd(t, "ip", "-n", "v6i-a", "addr", "add", "2001:db8:99::5/128", "dev", "eth0", "nodad", "preferred_lft", "0")
	nstest.CmdErr("ip", "netns", "exec", "v6i-a", "ping", "-6", "-c2", "-i0.2", "-W1", "-I", "2001:db8:99::5", "2001:db8::1")
	if n := count6(t, w, "2001:db8:99::5"); n != 0 {
		t.Errorf("%d spoofed packets reached the outside", n)
	}
	if !nstest.Ping(t, "v6i-a", "2001:db8::1") || count6(t, w, "2001:db8::2") == 0 {
		t.Error("the link's own traffic did not get out (the spoofing check proves nothing)")
	}

	// Siblings: a (not allowing) and b cannot reach each other; b and c
	// (both allowing) can.
	if nstest.Ping(t, "v6i-a", "fd00:b::2") || nstest.Ping(t, "v6i-b", "fd00:a::2") {
		t.Error("isolated links reached each other over IPv6")
	}
	if !nstest.Ping(t, "v6i-b", "fd00:c::2") {
		t.Error("siblings that both allow it could not reach each other over IPv6")
	}
}

// TestIPv6PacketTooBig: the ICMPv6 that IPv6 needs passes. A router beyond
// the outside host, on a path with a 1280-byte MTU, answers a large packet
// with "packet too big" (to the uplink's address, masqueraded): it is
// related to the flow and reaches the namespace, which learns the path's
// MTU. Neighbour discovery between the two ends of the pair works, or
// nothing would.
func TestIPv6PacketTooBig(t *testing.T) {
	w := nstest.NewWorld(t, "v6p-")
	ns := nstest.NewNS(t, "v6p-ns")
	far := nstest.NewNS(t, "v6p-far")
	// The outside host routes to far over a link with a 1280-byte MTU.
	inet(t, w, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	nstest.Cmd(t, "ip", "-n", w.InetName, "link", "add", "tofar", "mtu", "1280", "type", "veth", "peer", "name", "eth0", "netns", "v6p-far")
	nstest.Cmd(t, "ip", "-n", w.InetName, "addr", "add", "2001:db8:f::1/64", "dev", "tofar", "nodad")
	nstest.Cmd(t, "ip", "-n", w.InetName, "link", "set", "tofar", "up")
	nstest.Cmd(t, "ip", "-n", "v6p-far", "link", "set", "eth0", "mtu", "1280", "up")
	nstest.Cmd(t, "ip", "-n", "v6p-far", "addr", "add", "2001:db8:f::2/64", "dev", "eth0", "nodad")
	nstest.Cmd(t, "ip", "-n", "v6p-far", "route", "add", "default", "via", "2001:db8:f::1")
	nstest.Cmd(t, "ip", "-n", w.HostName, "-6", "route", "add", "default", "via", "2001:db8::1")
	l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", p6("fd00:3::/64"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !nstest.Ping(t, "v6p-ns", "2001:db8:f::2") {
		t.Fatal("small ping to far failed")
	}
	out, _ := nstest.CmdErr("ip", "netns", "exec", "v6p-ns", "ping", "-6", "-c1", "-W1", "-M", "do", "-s", "1400", "2001:db8:f::2")
	if !strings.Contains(strings.ToLower(out), "too big") {
		t.Errorf("no packet too big for a 1400-byte ping:\n%s", out)
	}
	if got := nstest.Cmd(t, "ip", "-n", "v6p-ns", "-6", "route", "get", "2001:db8:f::2"); !strings.Contains(got, "mtu 1280") {
		t.Errorf("the namespace did not learn the path MTU:\n%s", got)
	}
	nstest.Listen(t, far, "[2001:db8:f::2]:8080")
	if seen, err := nstest.Echo(ns, "[2001:db8:f::2]:8080"); err != nil || seen != "2001:db8::2" {
		t.Errorf("TCP to far: %q, %v", seen, err)
	}
}

// TestIPv6OnlyLinksForwarded: turning the uplink's IPv6 forwarding on
// forwards the links' traffic and nothing else: a network the user routes
// behind another interface (which has force_forwarding itself) stays
// unreachable from the uplink, as before. A host that forwards IPv6
// everywhere already (the user's router) keeps forwarding everything: the
// uplink's IPv6 setting is left alone, and an IPv4-only link changes
// nothing of IPv6.
func TestIPv6OnlyLinksForwarded(t *testing.T) {
	w := nstest.NewWorld(t, "v6f-")
	nstest.NewNS(t, "v6f-lan")
	nstest.Cmd(t, "ip", "-n", w.HostName, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", "v6f-lan")
	nstest.Cmd(t, "ip", "-n", w.HostName, "addr", "add", "2001:db8:5::2/64", "dev", "lan0", "nodad")
	nstest.Cmd(t, "ip", "-n", w.HostName, "link", "set", "lan0", "up")
	nstest.Cmd(t, "ip", "-n", "v6f-lan", "link", "set", "eth0", "up")
	nstest.Cmd(t, "ip", "-n", "v6f-lan", "addr", "add", "2001:db8:5::1/64", "dev", "eth0", "nodad")
	nstest.Cmd(t, "ip", "-n", "v6f-lan", "route", "add", "default", "via", "2001:db8:5::2")
	inet(t, w, "ip", "-6", "route", "add", "2001:db8:5::/64", "via", "2001:db8::2")
	setSysctl(t, w, "net.ipv6.conf.lan0.force_forwarding", "1")
	reach := func() bool { return nstest.Ping(t, w.InetName, "2001:db8:5::1") }
	if reach() {
		t.Fatal("the lan is reachable before Connect: the test proves nothing")
	}
	ns := nstest.NewNS(t, "v6f-ns")
	l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", p6("fd00:4::/64"))
	if err != nil {
		t.Fatal(err)
	}
	if !v6Forwards(t, w) {
		t.Fatal("uplink IPv6 forwarding not on")
	}
	if reach() {
		t.Error("the uplink forwards the outside to the lan once nsnet turned its IPv6 forwarding on")
	}
	l.Close()

	// The user's router: everything forwarded before, during and after.
	setSysctl(t, w, "net.ipv6.conf.all.forwarding", "1")
	if !reach() {
		t.Fatal("the lan is not reachable with global forwarding: the test proves nothing")
	}
	for _, p := range []string{"fd00:4::/64", "10.6.4.0/24"} {
		l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", p6(p))
		if err != nil {
			t.Fatal(err)
		}
		if !reach() {
			t.Errorf("with a %s link, the user's IPv6 forwarding stopped", p)
		}
		if got := sysctl(t, w, "net.ipv6.conf.up0.force_forwarding"); got != "0" {
			t.Errorf("with global forwarding on, up0 force_forwarding = %s", got)
		}
		l.Close()
		if !reach() {
			t.Errorf("after a %s link, the user's IPv6 forwarding stopped", p)
		}
	}
}

// sendRA sends a router advertisement (router lifetime 1800 s) from
// fe80::1 (which the link must have) to all nodes on link in h, as a
// router would.
func sendRA(t *testing.T, h *netns.Handle, link string) {
	t.Helper()
	err := h.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifi, err := netInterfaceIndex(link)
		if err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 255); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifi); err != nil {
			return err
		}
		src := &unix.SockaddrInet6{ZoneId: uint32(ifi), Addr: netip.MustParseAddr("fe80::1").As16()}
		if err := unix.Bind(fd, src); err != nil {
			return err
		}
		// type 134, code 0, checksum (the kernel's), hop limit 64, flags 0,
		// router lifetime 1800, reachable 0, retrans 0.
		ra := []byte{134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}
		return unix.Sendto(fd, ra, 0, &unix.SockaddrInet6{ZoneId: uint32(ifi), Addr: netip.MustParseAddr("ff02::1").As16()})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// raDefault reports whether the host has a default route learned from a
// router advertisement on up0.
func raDefault(t *testing.T, w *nstest.World) bool {
	t.Helper()
	for range 20 {
		out := nstest.Cmd(t, "ip", "-n", w.HostName, "-6", "route", "show", "default")
		if strings.Contains(out, "proto ra") && strings.Contains(out, "dev up0") {
			return true
		}
		time.Sleep(25 * time.Millisecond)
	}
	return false
}

// TestIPv6HostKeepsRouterAdvertisements: while IPv6 links are live the
// uplink still learns its default route from router advertisements
// (SLAAC hosts keep theirs): its IPv6 forwarding is force_forwarding, not
// the forwarding that makes Linux ignore them. A link cannot give the
// host a route by advertising one itself.
func TestIPv6HostKeepsRouterAdvertisements(t *testing.T) {
	w := nstest.NewWorld(t, "v6ra-")
	inet(t, w, "ip", "addr", "add", "fe80::1/64", "dev", "inet0", "nodad")
	ns := nstest.NewNS(t, "v6ra-ns")
	l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", p6("fd00:5::/64"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sendRA(t, w.Inet, "inet0")
	if !raDefault(t, w) {
		t.Error("the host ignored a router advertisement on the uplink while an IPv6 link is live")
	}
	nstest.Cmd(t, "ip", "-n", w.HostName, "-6", "route", "flush", "proto", "ra")
	// The oracle can fail: with the uplink's forwarding (not
	// force_forwarding) on, Linux ignores the advertisement (before 6.17,
	// where forwarding is on, unless accept_ra is 2).
	if ipv6Global {
		setSysctl(t, w, "net.ipv6.conf.up0.accept_ra", "1")
	} else {
		setSysctl(t, w, "net.ipv6.conf.up0.forwarding", "1")
	}
	sendRA(t, w.Inet, "inet0")
	if raDefault(t, w) {
		t.Error("the host took a router advertisement with forwarding on: the test proves nothing")
	}
	if ipv6Global {
		setSysctl(t, w, "net.ipv6.conf.up0.accept_ra", "2")
	} else {
		setSysctl(t, w, "net.ipv6.conf.up0.forwarding", "0")
	}

	// From the link: the namespace advertises itself as a router.
	nstest.Cmd(t, "ip", "-n", "v6ra-ns", "addr", "add", "fe80::1/64", "dev", "eth0", "nodad")
	sendRA(t, ns, "eth0")
	time.Sleep(100 * time.Millisecond)
	if out := nstest.Cmd(t, "ip", "-n", w.HostName, "-6", "route", "show", "default"); strings.Contains(out, l.HostVeth) {
		t.Errorf("a namespace gave the host a default route:\n%s", out)
	}
}

// netInterfaceIndex is the index of the named link of the calling
// thread's namespace.
func netInterfaceIndex(name string) (int, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0, err
	}
	return ifi.Index, nil
}

// TestIPv6SweepDeadOwner: a process killed with a dual-stack link leaves
// its pair, entries and both forwardings of the uplink on; Sweep removes
// them all and turns both back off (reporting the uplink once per
// family), and the host reads as before.
func TestIPv6SweepDeadOwner(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "v6sw-")
	before := state(t, w)
	killedChild(t, w, "v6sw-ns", "10.6.9.0/24", "", "NSNET_HELPER_PREFIX6=fd00:69::/64")
	if !v6Forwards(t, w) {
		t.Fatal("the killed helper did not turn IPv6 forwarding on: the test proves nothing")
	}
	res, err := nat.Sweep(w.Host)
	if err != nil {
		t.Fatal(err)
	}
	v6name := "up0 (IPv6)"
	if ipv6Global {
		v6name = "all (IPv6)" // the global switch
	}
	if len(res.Links) != 1 || !res.Table || !slices.Equal(res.Uplinks, []string{"up0", v6name}) && !slices.Equal(res.Uplinks, []string{v6name, "up0"}) {
		t.Errorf("Sweep = %+v", res)
	}
	sameState(t, w, before, "state after Sweep")
}

// TestIPv6CloseAll: CloseAll of dual-stack, IPv6-only and IPv4-only links
// out of one uplink gives back each family's forwarding once its last
// link is gone, whatever the order of families among the links.
func TestIPv6CloseAll(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "v6ca-")
	before := state(t, w)
	var links []*nat.Link
	for i, c := range []struct{ p4, p6 string }{{"", "fd00:a1::/64"}, {"10.6.10.0/24", ""}, {"10.6.11.0/24", "fd00:a2::/64"}, {"10.6.12.0/24", ""}} {
		ns := nstest.NewNS(t, fmt.Sprintf("v6ca-%d", i))
		cfg := nat.Config{HostNS: w.Host}
		var cidr netip.Prefix
		if c.p4 != "" {
			cidr = p6(c.p4)
		}
		if c.p6 != "" {
			cfg.Prefix6 = p6(c.p6)
		}
		l, err := cfg.Connect(ns, "up0", cidr)
		if err != nil {
			t.Fatal(err)
		}
		links = append(links, l)
	}
	if err := nat.CloseAll(links...); err != nil {
		t.Fatal(err)
	}
	sameState(t, w, before, "state after CloseAll")
}

// TestIPv6Ports: a dual-stack link's port published without an address
// is reachable at every address of the uplink, IPv6's included (the
// server sees the outside's own address), from the host itself, and after
// Unpublish no more; an IPv6-only link publishes on IPv6; ::1 and a family
// the link lacks are refused.
func TestIPv6Ports(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "v6pt-")
	ns := nstest.NewNS(t, "v6pt-ns")
	nstest.Listen(t, ns, "[::]:80")
	l, err := nat.Config{HostNS: w.Host, Prefix6: p6("fd00:61::/64"), Ports: []nat.Port{{Protocol: "tcp", HostPort: 8082, NSPort: 80}}}.Connect(ns, "up0", p6("10.6.61.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := fmt.Sprint(l.Ports()); got != "[tcp 203.0.113.2:8082->80 tcp 2001:db8::2:8082->80 tcp 127.0.0.1:8082->80]" {
		t.Errorf("Ports() = %s", got)
	}
	if seen, err := nstest.Echo(w.Inet, "[2001:db8::2]:8082"); err != nil || seen != "2001:db8::1" {
		t.Errorf("outside to the IPv6 port: %q %v", seen, err)
	}
	if seen, err := nstest.Echo(w.Inet, "203.0.113.2:8082"); err != nil || seen != "203.0.113.1" {
		t.Errorf("outside to the IPv4 port: %q %v", seen, err)
	}
	if seen, err := nstest.Echo(w.Host, "[2001:db8::2]:8082"); err != nil || seen != "2001:db8::2" {
		t.Errorf("the host to its IPv6 port: %q %v", seen, err)
	}
	if err := l.Unpublish(nat.Port{Protocol: "tcp", HostAddr: netip.MustParseAddr("2001:db8::2"), HostPort: 8082}); err != nil {
		t.Fatal(err)
	}
	if _, err := nstest.Echo(w.Inet, "[2001:db8::2]:8082"); err == nil {
		t.Error("an unpublished IPv6 port is still reachable")
	}
	if err := l.Publish(nat.Port{Protocol: "tcp", HostAddr: netip.IPv6Loopback(), HostPort: 8083}); !errors.Is(err, nat.ErrInvalidConfig) {
		t.Errorf("::1: %v", err)
	}
	l.Close()

	l6, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", p6("fd00:62::/64"))
	if err != nil {
		t.Fatal(err)
	}
	defer l6.Close()
	if err := l6.Publish(nat.Port{Protocol: "tcp", HostAddr: netip.MustParseAddr("203.0.113.2"), HostPort: 8084}); !errors.Is(err, nat.ErrInvalidConfig) {
		t.Errorf("an IPv4 port on an IPv6-only link: %v", err)
	}
	if err := l6.Publish(nat.Port{Protocol: "tcp", HostPort: 8084, NSPort: 80}); err != nil {
		t.Fatal(err)
	}
	if seen, err := nstest.Echo(w.Inet, "[2001:db8::2]:8084"); err != nil || seen != "2001:db8::1" {
		t.Errorf("outside to an IPv6-only link's port: %q %v", seen, err)
	}
}

// TestIPv6Adversity: a dual-stack link through changes of the host: the
// uplink renamed (its IPv6 masquerade follows its index, and Close turns
// the renamed uplink's IPv6 forwarding off), and a firewall reload (nft
// flush ruleset: the table, the IPv6 entries and the uplink's IPv6 share
// come back, with nothing unsolicited let in meanwhile).
func TestIPv6Adversity(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "v6a-")
	ns := nstest.NewNS(t, "v6a-ns")
	dst := serve6(t, w)
	before := state(t, w)
	l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", p6("fd00:ad::/64"))
	if err != nil {
		t.Fatal(err)
	}
	nstest.Cmd(t, "ip", "-n", w.HostName, "link", "set", "up0", "name", "wan0")
	if seen, err := nstest.Echo(ns, dst); err != nil || seen != "2001:db8::2" {
		t.Errorf("after the uplink's rename: %q %v", seen, err)
	}
	nftIn(t, w, "flush", "ruleset")
	deadline := time.Now().Add(time.Second)
	for {
		out, _ := nstest.CmdErr("ip", "netns", "exec", w.HostName, "nft", "list", "set", "inet", "nsnet", "egress")
		if strings.Contains(out, "ipv6") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no IPv6 entries 1 s after the flush:\n%s", out)
		}
		time.Sleep(5 * time.Millisecond)
	}
	inet(t, w, "ip", "-6", "route", "add", "fd00:ad::/64", "via", "2001:db8::2")
	if nstest.Ping(t, w.InetName, "fd00:ad::2") {
		t.Error("the outside reaches the namespace after the flush")
	}
	if seen, err := nstest.Echo(ns, dst); err != nil || seen != "2001:db8::2" {
		t.Errorf("after the flush: %q %v", seen, err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if got := sysctl(t, w, "net.ipv6.conf.wan0.force_forwarding"); got != "0" {
		t.Errorf("the renamed uplink's IPv6 forwarding after Close: %s", got)
	}
	inet(t, w, "ip", "-6", "route", "del", "fd00:ad::/64")
	nstest.Cmd(t, "ip", "-n", w.HostName, "link", "set", "wan0", "name", "up0")
	sameState(t, w, before, "after Close")
}
