package network_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nat/internal/dns"
	"github.com/nsnet/nsnet/nat/network"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

func requireTools(t *testing.T) {
	t.Helper()
	nstest.Require(t)
	for _, c := range []string{"ip", "nft", "ping", "getent"} {
		nstest.RequireCmd(t, c)
	}
}

// hostResolvConf points the network's name server (and the members'
// resolv.conf) at a host resolv.conf naming the outside host's name
// server, which answers www.test.example, with the search domain
// test.example.
func hostResolvConf(t *testing.T, w *nstest.World) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(path, []byte("nameserver 203.0.113.1\nsearch test.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := dns.HostResolvConf
	dns.HostResolvConf = path
	t.Cleanup(func() { dns.HostResolvConf = old })
	s, err := nstest.ServeDNS(w.Inet, "203.0.113.1:53", map[string]netip.Addr{"www.test.example": netip.MustParseAddr("203.0.113.1")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
}

// hostState is what the host looks like to ip and nft, for before/after
// comparisons.
func hostState(t *testing.T, w *nstest.World) string {
	t.Helper()
	in := func(args ...string) string {
		return nstest.Cmd(t, "ip", append([]string{"netns", "exec", w.HostName}, args...)...)
	}
	return timers.ReplaceAllString(nstest.Steady(strings.Join([]string{
		in("ip", "-d", "link"), in("ip", "addr"), in("ip", "-4", "route", "show", "table", "all"),
		in("ip", "-6", "route", "show", "table", "all"), in("nft", "list", "ruleset"),
		in("sh", "-c", "grep . /proc/sys/net/ipv4/conf/*/forwarding /proc/sys/net/ipv6/conf/*/force_forwarding"),
		// (Not the kernel's own multicast reports, sent when it sees fit.)
		in("sh", "-c", "conntrack -L 2>/dev/null | grep -v -E 'dst=(22[4-9]|23[0-9])[.]|dst=ff0' || true"),
	}, "\n---\n")), "timer")
}

// timers are the bridge's and its ports' timers in ip -d link.
var timers = regexp.MustCompile(`timer\s+[\d.]+`)

// resolve resolves name inside the named namespace as its programs do
// (glibc, through ip netns exec's resolv.conf): the first address of
// family "ahostsv4" or "ahostsv6".
func resolve(t *testing.T, nsName, db, name string) (netip.Addr, error) {
	t.Helper()
	out, err := nstest.CmdErr("ip", "netns", "exec", nsName, "getent", db, name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("getent %s %s in %s: %v: %s", db, name, nsName, err, out)
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		return netip.Addr{}, fmt.Errorf("getent %s %s: no answer", db, name)
	}
	return netip.ParseAddr(f[0])
}

func newNetwork(t *testing.T, c network.Config) *network.Network {
	t.Helper()
	n, err := network.Create(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func attach(t *testing.T, n *network.Network, nsName string, mc network.MemberConfig) (*netns.Handle, *network.Member) {
	t.Helper()
	ns := nstest.NewNS(t, nsName)
	m, err := n.Attach(ns, mc)
	if err != nil {
		t.Fatal(err)
	}
	return ns, m
}

// TestNetwork is a server and two clients on one dual-stack network: by
// name, TCP and UDP between members (directly, not NATed), out to the
// outside masqueraded, in from the outside to a published port; names
// leave with their member; Close of the network leaves the host exactly as
// before, at once.
//
// Twice: with br_netfilter passing bridged frames through the IP hooks
// (as on a host where Docker runs), and without (as where it is not
// loaded), where the host offers the setting.
func TestNetwork(t *testing.T) {
	requireTools(t)
	for _, brnf := range []string{"1", "0"} {
		t.Run("bridge-nf-call-iptables="+brnf, func(t *testing.T) { testNetwork(t, brnf) })
	}
}

func testNetwork(t *testing.T, brnf string) {
	w := nstest.NewWorld(t, "nw-")
	const sysctl = "/proc/sys/net/bridge/bridge-nf-call-iptables"
	if _, err := os.Stat(sysctl); err == nil {
		nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "sh", "-c",
			"echo "+brnf+" > "+sysctl+" && echo "+brnf+" > /proc/sys/net/bridge/bridge-nf-call-ip6tables")
	} else if brnf == "1" {
		t.Log("no br_netfilter here: bridged frames pass no IP hooks")
	}
	hostResolvConf(t, w)
	before := hostState(t, w)
	n := newNetwork(t, network.Config{HostNS: w.Host, Uplink: w.Uplink,
		Prefix: netip.MustParsePrefix("10.77.0.0/24"), Prefix6: netip.MustParsePrefix("fd00:77::/64")})
	srvNS, srv := attach(t, n, "nw-srv", network.MemberConfig{Name: "server", Aliases: []string{"db"}})
	c1NS, c1 := attach(t, n, "nw-c1", network.MemberConfig{Name: "client1"})
	c2NS, _ := attach(t, n, "nw-c2", network.MemberConfig{Name: "Client2", Addr: netip.MustParseAddr("10.77.0.200")})
	if srv.Addr != netip.MustParseAddr("10.77.0.2") || c1.Addr != netip.MustParseAddr("10.77.0.3") || n.Gateway != netip.MustParseAddr("10.77.0.1") {
		t.Fatalf("addresses: server %v, client1 %v, gateway %v", srv.Addr, c1.Addr, n.Gateway)
	}
	t.Log(n, "\n", srv, "\n", c1)

	// Names, as glibc resolves them in the members, both families, and
	// the host's own resolution for other names.
	for _, c := range []struct{ ns, db, name, want string }{
		{"nw-c1", "ahostsv4", "server", "10.77.0.2"},
		{"nw-c1", "ahostsv6", "server", srv.Addr6.String()},
		{"nw-c2", "ahostsv4", "db", "10.77.0.2"},
		{"nw-c2", "ahostsv4", "SERVER.test.example", "10.77.0.2"},
		{"nw-srv", "ahostsv4", "client2", "10.77.0.200"},
		{"nw-c1", "ahostsv4", "www.test.example", "203.0.113.1"},
	} {
		got, err := resolve(t, c.ns, c.db, c.name)
		if err != nil || got.String() != c.want {
			t.Errorf("%s: %s %s = %v, %v; want %s", c.ns, c.db, c.name, got, err, c.want)
		}
	}
	if got := n.Lookup("Server"); len(got) != 2 || got[0] != srv.Addr || got[1] != srv.Addr6 {
		t.Errorf("Lookup(Server) = %v", got)
	}
	if _, err := resolve(t, "nw-c1", "ahostsv4", "nosuch"); err == nil {
		t.Error("an unknown name resolved")
	}

	// Member to member by name: ping, TCP and UDP, from the member's own
	// address (directly, no NAT).
	if !nstest.Ping(t, "nw-c1", "server") {
		t.Error("ping server from client1 failed")
	}
	nstest.Listen(t, srvNS, ":8080")
	udp, err := nstest.ServeUDP(srvNS, ":8081")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	for _, c := range []struct {
		ns   *netns.Handle
		name string
		db   string
		from string
	}{{c1NS, "nw-c1", "ahostsv4", c1.Addr.String()}, {c1NS, "nw-c1", "ahostsv6", c1.Addr6.String()}, {c2NS, "nw-c2", "ahostsv4", "10.77.0.200"}} {
		a, err := resolve(t, c.name, c.db, "server")
		if err != nil {
			t.Fatal(err)
		}
		if seen, err := nstest.Echo(c.ns, netip.AddrPortFrom(a, 8080).String()); err != nil || seen != c.from {
			t.Errorf("TCP %s -> server (%v): seen from %q, %v; want %s", c.name, a, seen, err, c.from)
		}
		if seen, err := nstest.EchoUDP(c.ns, netip.AddrPortFrom(a, 8081).String()); err != nil || seen != c.from {
			t.Errorf("UDP %s -> server (%v): seen from %q, %v; want %s", c.name, a, seen, err, c.from)
		}
	}

	// Out, masqueraded, both families.
	nstest.Listen(t, w.Inet, "203.0.113.1:9000")
	nstest.Listen(t, w.Inet, "[2001:db8::1]:9000")
	for _, c := range []struct{ to, want string }{{"203.0.113.1:9000", "203.0.113.2"}, {"[2001:db8::1]:9000", "2001:db8::2"}} {
		if seen, err := nstest.Echo(c1NS, c.to); err != nil || seen != c.want {
			t.Errorf("client1 -> %s: seen from %q, %v; want %s (masqueraded)", c.to, seen, err, c.want)
		}
	}

	// In, to a published port, from the outside (IPv4 and IPv6) and from
	// another member through the host's address (hairpin).
	if err := srv.Publish(nat.Port{Protocol: "tcp", HostPort: 18080, NSPort: 8080}); err != nil {
		t.Fatal(err)
	}
	if got := srv.Ports(); len(got) != 3 {
		t.Errorf("Ports() = %v, want 203.0.113.2, 127.0.0.1 and 2001:db8::2", got)
	}
	for _, to := range []string{"203.0.113.2:18080", "[2001:db8::2]:18080"} {
		if seen, err := nstest.Echo(w.Inet, to); err != nil || (seen != "203.0.113.1" && seen != "2001:db8::1") {
			t.Errorf("outside -> %s: seen from %q, %v", to, seen, err)
		}
	}
	// The host itself, on 127.0.0.1.
	if seen, err := nstest.Echo(w.Host, "127.0.0.1:18080"); err != nil {
		t.Errorf("host -> 127.0.0.1:18080: seen from %q, %v", seen, err)
	}
	// Hairpin: a member, and the server itself, through the host's
	// address (masqueraded to the gateway, so that the replies come back
	// through the host).
	for _, from := range []*netns.Handle{c2NS, srvNS} {
		if seen, err := nstest.Echo(from, "203.0.113.2:18080"); err != nil || seen != "10.77.0.1" {
			t.Errorf("hairpin to the published port: seen from %q, %v; want the gateway", seen, err)
		}
	}
	// Nothing unsolicited from the outside.
	if _, err := nstest.Echo(w.Inet, "10.77.0.2:8080"); err == nil {
		t.Error("the outside reached a member's unpublished port")
	}
	if err := srv.Unpublish(nat.Port{Protocol: "tcp", HostPort: 18080}); err != nil {
		t.Fatal(err)
	}
	if _, err := nstest.Echo(w.Inet, "203.0.113.2:18080"); err == nil {
		t.Error("the port answers after Unpublish")
	}

	// A member's Close: its name and link go at once.
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c1.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if out := nstest.Cmd(t, "ip", "-n", w.HostName, "-o", "link"); strings.Contains(out, c1.HostVeth) {
		t.Errorf("client1's bridge port is listed right after Close:\n%s", out)
	}
	if out := nstest.Cmd(t, "ip", "-n", "nw-c1", "-o", "link"); strings.Contains(out, "eth0") {
		t.Errorf("client1's eth0 is listed right after Close:\n%s", out)
	}
	if _, err := resolve(t, "nw-c2", "ahostsv4", "client1"); err == nil {
		t.Error("client1's name resolves after its Close")
	}
	if _, err := os.Stat("/etc/netns/nw-c1/resolv.conf"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("client1's resolv.conf after Close: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if after := hostState(t, w); after != before {
		t.Errorf("host right after Close:\n%s", diff(before, after))
	}
}

func diff(a, b string) string {
	dir, err := os.MkdirTemp("", "nsnet-diff")
	if err != nil {
		return err.Error()
	}
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "before"), []byte(a), 0o644)
	os.WriteFile(filepath.Join(dir, "after"), []byte(b), 0o644)
	out, _ := exec.Command("diff", "-u", filepath.Join(dir, "before"), filepath.Join(dir, "after")).CombinedOutput()
	return string(out)
}

var counters = regexp.MustCompile(`counter packets (\d+) bytes \d+ comment "(\w+)"`)

func count(t *testing.T, nsName string) map[string]int { return countIn(t, nsName, "netdev") }

// countIn reads the counters of table FAMILY count in the named namespace,
// by their comments.
func countIn(t *testing.T, nsName, family string) map[string]int {
	t.Helper()
	out := nstest.Cmd(t, "ip", "netns", "exec", nsName, "nft", "list", "table", family, "count")
	got := map[string]int{}
	for _, m := range counters.FindAllStringSubmatch(out, -1) {
		got[m[2]], _ = strconv.Atoi(m[1])
	}
	return got
}

var _ = net.IPv4len
var _ = time.Second
