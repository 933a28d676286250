package nat_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// sysctl reads a sysctl of the world's host namespace.
func sysctl(t *testing.T, w *nstest.World, key string) string {
	t.Helper()
	return strings.TrimSpace(nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "sysctl", "-n", key))
}

// serve6 starts the outside host's TCP echo server on 2001:db8::1:8080.
func serve6(t *testing.T, w *nstest.World) string {
	t.Helper()
	a := netip.AddrPortFrom(w.Outside6, 8080).String()
	nstest.Listen(t, w.Inet, a)
	return a
}

// TestIPv6Masquerade: a dual-stack link reaches the outside host in both
// families, by ping and TCP, seen from the uplink's addresses; only the
// uplink's and the host end's IPv6 forwarding are turned on, and Close
// turns them back off.
func TestIPv6Masquerade(t *testing.T) {
	w := nstest.NewWorld(t, "v6m-")
	ns := nstest.NewNS(t, "v6m-ns")
	dst := serve6(t, w)
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	l, err := nat.Config{HostNS: w.Host, Prefix6: netip.MustParsePrefix("fd00:1::/64")}.Connect(ns, "up0", netip.MustParsePrefix("10.6.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got, want := l.String(), "10.6.0.0/24, fd00:1::/64: "+l.HostVeth+" (10.6.0.1, fd00:1::1) <-> eth0 (10.6.0.2, fd00:1::2) via up0"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if l.NSAddr6 != netip.MustParsePrefix("fd00:1::2/64") || l.HostAddr6 != netip.MustParsePrefix("fd00:1::1/64") || l.Prefix6 != netip.MustParsePrefix("fd00:1::/64") {
		t.Errorf("link fields %v %v %v", l.Prefix6, l.HostAddr6, l.NSAddr6)
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
	for key, want := range map[string]string{
		"net.ipv6.conf.up0.force_forwarding":                 "1",
		"net.ipv6.conf." + l.HostVeth + ".force_forwarding": "1",
		"net.ipv6.conf.all.forwarding":                       "0",
		"net.ipv6.conf.up0.forwarding":                       "0",
	} {
		if got := sysctl(t, w, key); got != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := sysctl(t, w, "net.ipv6.conf.up0.force_forwarding"); got != "0" {
		t.Errorf("after Close: up0 force_forwarding = %s", got)
	}
	if nstest.Ping(t, "v6m-ns", "2001:db8::1") {
		t.Error("ping -6 works after Close")
	}
}

var _ = netns.ErrClosed
