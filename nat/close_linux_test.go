package nat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// linkNames lists the links of the namespace nsName ("" for the current
// one) as ip -j reads them.
func linkNames(t *testing.T, nsName string) []string {
	t.Helper()
	args := []string{"-j", "link"}
	if nsName != "" {
		args = append([]string{"-n", nsName}, args...)
	}
	var links []struct {
		Name string `json:"ifname"`
	}
	if err := json.Unmarshal([]byte(nstest.Cmd(t, "ip", args...)), &links); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Name)
	}
	slices.Sort(names)
	return names
}

// TestCloseLeavesNothing: right after Close returns, with nothing waited
// for, ip -j lists the host's links as before Connect and the namespace
// holds lo alone, the library's table is gone and the uplink's forwarding
// is back off: 100 times out of 100, for IPv4, dual-stack and
// published-port links, each also closed with CloseAll.
func TestCloseLeavesNothing(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "cln-")
	ns := nstest.NewNS(t, "cln-ns")
	in := func(args ...string) string { return inHost(t, w, args...) }
	// Another link stays throughout: each Close is then not the host's
	// last, and takes its fastest path.
	keeper, err := nat.Config{HostNS: w.Host}.Connect(nstest.NewNS(t, "cln-keep"), "up0", netip.MustParsePrefix("10.76.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer keeper.Close()
	configs := []nat.Config{
		{HostNS: w.Host},
		{HostNS: w.Host, Prefix6: netip.MustParsePrefix("fd00:77::/64")},
		{HostNS: w.Host, Ports: []nat.Port{{Protocol: "tcp", HostPort: 8080, NSPort: 80}}},
	}
	hostBefore := linkNames(t, w.HostName)
	nsBefore := linkNames(t, "cln-ns")
	rulesetBefore := in("nft", "list", "ruleset")
	var durations []time.Duration
	for i := range 100 {
		cfg := configs[i%len(configs)]
		l, err := cfg.Connect(ns, "up0", netip.MustParsePrefix("10.77.0.0/24"))
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		t0 := time.Now()
		if i%2 == 0 {
			err = l.Close()
		} else {
			err = nat.CloseAll(l)
		}
		durations = append(durations, time.Since(t0))
		if err != nil {
			t.Fatalf("cycle %d: close: %v", i, err)
		}
		// At once, as a program would (Go's net package dumps the links).
		var ifs []net.Interface
		if err := w.Host.Do(func() (err error) { ifs, err = net.Interfaces(); return err }); err != nil {
			t.Fatal(err)
		}
		if len(ifs) != len(hostBefore) {
			t.Fatalf("cycle %d: net.Interfaces right after Close: %v, before Connect: %v", i, ifs, hostBefore)
		}
		if got := linkNames(t, w.HostName); !slices.Equal(got, hostBefore) {
			t.Fatalf("cycle %d (%+v): host links right after Close: %v, before Connect: %v", i, cfg.Prefix6, got, hostBefore)
		}
		if got := linkNames(t, "cln-ns"); !slices.Equal(got, nsBefore) {
			t.Fatalf("cycle %d: namespace links right after Close: %v, before: %v", i, got, nsBefore)
		}
		if i%10 == 0 || i < len(configs) {
			if out := in("nft", "list", "ruleset"); out != rulesetBefore {
				t.Fatalf("cycle %d: the ruleset right after Close:\n%s", i, lineDiff(rulesetBefore, out))
			}
			if out := in("sysctl", "-n", "net.ipv6.conf.up0.force_forwarding"); out != "0\n" {
				t.Fatalf("cycle %d: up0's IPv6 forwarding right after Close: %q", i, out)
			}
		}
	}
	slices.Sort(durations)
	t.Logf("Close: median %v, max %v", durations[len(durations)/2], durations[len(durations)-1])
	if err := keeper.Close(); err != nil {
		t.Fatal(err)
	}
	if out := in("nft", "list", "ruleset"); strings.Contains(out, "nsnet") {
		t.Errorf("the table right after the last Close:\n%s", out)
	}
	if out := in("sysctl", "-n", "net.ipv4.conf.up0.forwarding", "net.ipv6.conf.up0.force_forwarding"); out != "0\n0\n" {
		t.Errorf("up0's forwarding right after the last Close: %q", out)
	}
}

// countUDP counts the datagrams that reach addr in ns.
func countUDP(t *testing.T, ns *netns.Handle, addr string) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	var c net.PacketConn
	if err := ns.Do(func() (err error) { c, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
			n.Add(1)
		}
	}()
	return &n
}

// sendEvery sends a datagram from ns to addr every 20 ms until the test
// ends.
func sendEvery(t *testing.T, ns *netns.Handle, addr string) {
	t.Helper()
	var c net.Conn
	if err := ns.Do(func() (err error) { c, err = net.Dial("udp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(stop); <-done; c.Close() })
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				c.Write([]byte("x"))
			}
		}
	}()
}

// TestSiblingFlowsToPortsForgotten: a connected namespace B that uses A's
// published port gets its connection marked with its own link by
// from_link; Unpublish and Close of A must still forget it. B keeps
// sending UDP to A's port: after Unpublish returns, not one datagram
// reaches A. B's TCP connection to A's port has no conntrack entry left
// after A's Close (conntrack -L is the oracle), so a later holder of A's
// prefix cannot get B's packets.
func TestSiblingFlowsToPortsForgotten(t *testing.T) {
	requireTools(t)
	nstest.RequireCmd(t, "conntrack")
	w := nstest.NewWorld(t, "sib-")
	a, b := nstest.NewNS(t, "sib-a"), nstest.NewNS(t, "sib-b")
	udp := nat.Port{Protocol: "udp", HostPort: 5353, NSPort: 53}
	la, err := nat.Config{HostNS: w.Host, Ports: []nat.Port{udp, {Protocol: "tcp", HostPort: 8080, NSPort: 80}}}.
		Connect(a, "up0", netip.MustParsePrefix("10.78.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()
	lb, err := nat.Config{HostNS: w.Host}.Connect(b, "up0", netip.MustParsePrefix("10.79.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	got := countUDP(t, a, "10.78.0.2:53")
	sendEvery(t, b, "203.0.113.2:5353")
	time.Sleep(200 * time.Millisecond)
	if got.Load() == 0 {
		t.Fatal("B's datagrams did not reach A's published port")
	}
	if err := la.Unpublish(udp); err != nil {
		t.Fatal(err)
	}
	n := got.Load()
	time.Sleep(700 * time.Millisecond)
	if late := got.Load() - n; late > 0 {
		t.Errorf("%d datagrams of B reached A in the 700 ms after Unpublish returned", late)
	}

	// TCP: an established connection of B to A's port, idle.
	nstest.Listen(t, a, "10.78.0.2:80")
	var c net.Conn
	if err := b.Do(func() (err error) { c, err = net.Dial("tcp", "203.0.113.2:8080"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	entries := func() string {
		out, _ := nstest.CmdErr("ip", "netns", "exec", w.HostName, "conntrack", "-L", "-p", "tcp", "--orig-port-dst", "8080")
		return strings.TrimSpace(out)
	}
	if !strings.Contains(entries(), "dport=8080") {
		t.Fatalf("no conntrack entry for B's connection to A's port:\n%s", entries())
	}
	if err := la.Close(); err != nil {
		t.Fatal(err)
	}
	if out := entries(); strings.Contains(out, "dport=8080") {
		t.Errorf("B's connection to A's port outlived A's Close:\n%s", out)
	}
}

// TestDescriptorsPerLink: a live link holds one descriptor of its own
// (its namespace's handle; the handle to the host is the host state's,
// shared), so 10,000 links fit under a limit of 20,000 with the caller's
// own namespace handles. Counted over 40 links, beyond the host state's
// fixed sockets.
func TestDescriptorsPerLink(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "fds-")
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	first, err := nat.Config{HostNS: w.Host}.Connect(nstest.NewNS(t, "fds-0"), "up0", netip.MustParsePrefix("10.54.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	var links []*nat.Link
	var nss []*netns.Handle
	for i := 1; i <= 40; i++ {
		nss = append(nss, nstest.NewNS(t, fmt.Sprintf("fds-%d", i)))
	}
	before := fds()
	for i, ns := range nss {
		l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix(fmt.Sprintf("10.54.%d.0/24", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		links = append(links, l)
	}
	perLink := float64(fds()-before) / float64(len(links))
	t.Logf("%.2f descriptors per link", perLink)
	if perLink > 1.1 {
		t.Errorf("%.2f descriptors per live link, want 1", perLink)
	}
	if err := nat.CloseAll(append(links, first)...); err != nil {
		t.Fatal(err)
	}
}

// TestCloseForgetsHostConnections: the connections between a link's
// namespace and the host itself, both ways (the namespace's query to a
// host service, as to the DNS relay; the host's own connection to the
// namespace), are marked with the link's index and go with its Close:
// conntrack -L, the oracle, lists none of them right after it, while the
// other link's stay.
func TestCloseForgetsHostConnections(t *testing.T) {
	requireTools(t)
	nstest.RequireCmd(t, "conntrack")
	w := nstest.NewWorld(t, "clh-")
	ns, other := nstest.NewNS(t, "clh-ns"), nstest.NewNS(t, "clh-other")
	l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix("10.78.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	lo, err := nat.Config{HostNS: w.Host}.Connect(other, "up0", netip.MustParsePrefix("10.79.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer lo.Close()
	send := func(in *netns.Handle, to string) {
		t.Helper()
		var c net.Conn
		if err := in.Do(func() (err error) { c, err = net.Dial("udp4", to); return err }); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for _, srv := range []struct {
		in   *netns.Handle
		addr string
	}{{w.Host, "10.78.0.1:5301"}, {w.Host, "10.79.0.1:5301"}, {ns, "10.78.0.2:5302"}, {other, "10.79.0.2:5302"}} {
		c, err := srv.in.ListenPacket("udp4", srv.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	send(ns, "10.78.0.1:5301")
	send(other, "10.79.0.1:5301")
	send(w.Host, "10.78.0.2:5302")
	send(w.Host, "10.79.0.2:5302")
	flows := func() string {
		return inHost(t, w, "sh", "-c", "conntrack -L -p udp 2>/dev/null | grep -E 'dport=530[12] ' | sort || true")
	}
	before := flows()
	if strings.Count(before, "\n") != 4 {
		t.Fatalf("the four connections are not all tracked:\n%s", before)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	after := flows()
	if strings.Contains(after, "10.78.0.") {
		t.Errorf("connections between the closed link's namespace and the host survive its Close:\n%s", after)
	}
	if strings.Count(after, "\n") != 2 || strings.Count(after, "10.79.0.") != 8 { // two lines, four addresses each
		t.Errorf("the other link's connections went too:\n%s", after)
	}
}

// TestCloseForgetsRelayFlows: the DNS relay's own connections to the
// host's loopback resolver, made for a link's queries (over UDP and TCP),
// are forgotten by that link's Close, as the link's other connections
// are: conntrack -L right after Close shows none of them, while another
// link's relay connections stay. The TCP query leaves the relay's
// connection to the resolver open (the resolver waits for the next
// query), so Close ends a live one: a FIN exchange finished after the
// flush would leave a new, unmarked entry (under load, 1 run in 3).
func TestCloseForgetsRelayFlows(t *testing.T) {
	requireTools(t)
	nstest.RequireCmd(t, "conntrack")
	for _, resolver := range []string{"127.0.0.1", "::1"} {
		t.Run(resolver, func(t *testing.T) { closeForgetsRelayFlows(t, netip.MustParseAddr(resolver)) })
	}
}

// closeForgetsRelayFlows: TestCloseForgetsRelayFlows with the host's
// resolver on resolver.
func closeForgetsRelayFlows(t *testing.T, resolver netip.Addr) {
	w := nstest.NewWorld(t, "crf-")
	loopbackResolver(t, w, resolver, map[string]netip.Addr{"www.test": netip.MustParseAddr("203.0.113.1")})
	// The relay's connections to the resolver, as "protocol source-port".
	flows := func() []string {
		out := inHost(t, w, "sh", "-c", "conntrack -L -f "+map[bool]string{true: "ipv4", false: "ipv6"}[resolver.Is4()]+
			" 2>/dev/null | grep -E ' dst="+resolver.String()+" sport=[0-9]+ dport=53 ' || true")
		var keys []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				for _, x := range f {
					if strings.HasPrefix(x, "sport=") {
						keys = append(keys, f[0]+" "+x)
						break
					}
				}
			}
		}
		slices.Sort(keys)
		return keys
	}
	if f := flows(); len(f) > 0 {
		t.Fatalf("relay connections before Connect: %q", f)
	}
	var links []*nat.Link
	var seen [][]string // the relay connections after each link's queries
	for i, p := range []string{"10.80.0.0/24", "10.81.0.0/24"} {
		ns := nstest.NewNS(t, fmt.Sprintf("crf-ns%d", i))
		l, err := nat.Config{HostNS: w.Host, DNS: nat.DNSRelay}.Connect(ns, "up0", netip.MustParsePrefix(p))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		links = append(links, l)
		if a, err := ns.Resolver().LookupNetIP(context.Background(), "ip4", "www.test"); err != nil || len(a) != 1 {
			t.Fatalf("%s: lookup through the relay: %v, %v", p, a, err)
		}
		tc, err := ns.Dial("tcp", netip.MustParsePrefix(p).Addr().Next().String()+":53")
		if err != nil {
			t.Fatal(err)
		}
		q := query()
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		tc.Write(append([]byte{0, byte(len(q))}, q...))
		if _, err := io.ReadFull(tc, make([]byte, 2)); err != nil {
			t.Fatalf("%s: TCP query through the relay: %v", p, err)
		}
		tc.Close()
		seen = append(seen, flows())
	}
	all := seen[1]
	second := slices.DeleteFunc(slices.Clone(all), func(k string) bool { return slices.Contains(seen[0], k) })
	if len(seen[0]) == 0 || len(second) == 0 {
		t.Fatalf("each link's relay connections are not tracked: %q, then %q", seen[0], all)
	}
	if !slices.ContainsFunc(all, func(k string) bool { return strings.HasPrefix(k, "udp") }) ||
		!slices.ContainsFunc(all, func(k string) bool { return strings.HasPrefix(k, "tcp") }) {
		t.Fatalf("the relay's connections are not tracked: %q", all)
	}
	if err := links[0].Close(); err != nil {
		t.Fatal(err)
	}
	if after := flows(); !slices.Equal(after, second) {
		t.Errorf("after the first link's Close, its relay connections were %q, the other's %q; left: %q", seen[0], second, after)
	}
	if err := links[1].Close(); err != nil {
		t.Fatal(err)
	}
	if f := flows(); len(f) > 0 {
		t.Errorf("relay connections survive the last Close: %q", f)
	}
}

// concatKey is an "address . length" key in nft -j's output.
var concatKey = regexp.MustCompile(`"concat": \["([0-9a-f.:]+)", (\d+)\]`)

// claimKeys are the keys of the IPv4 claims map (claims and their
// covers), as nft shows them: "10.91.0.0 . 17".
func claimKeys(t *testing.T, w *nstest.World) map[string]bool {
	t.Helper()
	out := inHost(t, w, "nft", "-j", "list", "map", "inet", "nsnet", "claims")
	if !json.Valid([]byte(out)) {
		t.Fatalf("nft -j: %s", out)
	}
	keys := map[string]bool{}
	for _, m := range concatKey.FindAllStringSubmatch(out, -1) {
		keys[m[1]+" . "+m[2]] = true
	}
	return keys
}

// TestCloseKeepsNeededCovers: Close removes the covers of its link's
// prefix (the entries that refuse a later prefix containing it) that no
// other claim needs, and keeps those another link's claim needs: a prefix
// containing a live link's is still refused after a neighbour closes,
// and one that contains only the closed link's is free again. nft -j is
// the oracle for the covers.
func TestCloseKeepsNeededCovers(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "ckc-")
	connect := func(name, p string) (*nat.Link, error) {
		return nat.Config{HostNS: w.Host, DNS: nat.DNSNone}.Connect(nstest.NewNS(t, name), "up0", netip.MustParsePrefix(p))
	}
	keeper, err := connect("ckc-keep", "10.91.64.0/24") // inside 10.91.0.0/17, outside 10.91.0.0/18
	if err != nil {
		t.Fatal(err)
	}
	defer keeper.Close()
	claims := func() map[string]bool { return claimKeys(t, w) }
	before := claims()
	l, err := connect("ckc-ns", "10.91.0.0/24")
	if err != nil {
		t.Fatal(err)
	}
	with := claims()
	for _, k := range []string{"10.91.0.0 . 24", "10.91.0.0 . 23", "10.91.0.0 . 18"} {
		if !with[k] {
			t.Fatalf("no %q in the claims with the link: %v", k, with)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	after := claims()
	if !maps.Equal(after, before) {
		t.Errorf("claims after Close %v, before Connect %v", after, before)
	}
	if !after["10.91.0.0 . 17"] {
		t.Errorf("the keeper's cover 10.91.0.0/17 went with the other link's Close: %v", after)
	}
	if _, err := connect("ckc-wide", "10.91.0.0/17"); !errors.Is(err, nat.ErrOverlap) {
		t.Errorf("10.91.0.0/17, which holds the keeper's prefix, after the neighbour's Close: %v, want ErrOverlap", err)
	}
	l2, err := connect("ckc-free", "10.91.0.0/18")
	if err != nil {
		t.Fatalf("10.91.0.0/18, which holds only the closed link's prefix: %v", err)
	}
	l2.Close()
}

// TestCoversOfAClaimAddedMeanwhile: a link connected while its
// neighbour's Close has found covers that no claim needs, before it
// removes them, keeps them all: the removal commits only at the ruleset's
// generation it read them at, and is looked at again. nft -j is the
// oracle; a prefix containing the new link's is still refused.
func TestCoversOfAClaimAddedMeanwhile(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "cam-")
	cfg := nat.Config{HostNS: w.Host, DNS: nat.DNSNone}
	a, err := cfg.Connect(nstest.NewNS(t, "cam-a"), "up0", netip.MustParsePrefix("10.93.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	pb := netip.MustParsePrefix("10.93.1.0/24")
	nsB := nstest.NewNS(t, "cam-b")
	var b *nat.Link
	nat.SetFailHook(func(step string) error {
		if step == "close covers" && b == nil {
			var err error
			if b, err = cfg.Connect(nsB, "up0", pb); err != nil {
				t.Errorf("the link connected meanwhile: %v", err)
			}
		}
		return nil
	})
	err = a.Close()
	nat.SetFailHook(nil)
	if err != nil {
		t.Fatal(err)
	}
	if b == nil {
		t.Fatal("the Close found no cover to remove: the hook never ran")
	}
	defer b.Close()
	keys := claimKeys(t, w)
	for bits := pb.Bits() - 1; bits >= 8; bits-- {
		c := netip.PrefixFrom(pb.Addr(), bits).Masked()
		if k := fmt.Sprintf("%s . %d", c.Addr(), bits); !keys[k] {
			t.Errorf("%s's cover %s went with its neighbour's Close", pb, k)
		}
	}
	if l, err := cfg.Connect(nstest.NewNS(t, "cam-wide"), "up0", netip.MustParsePrefix("10.93.0.0/23")); !errors.Is(err, nat.ErrOverlap) {
		if err == nil {
			l.Close()
		}
		t.Errorf("10.93.0.0/23, which holds %s: %v, want ErrOverlap", pb, err)
	}
}
