package network_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nat/network"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// TestHelperNetwork is the body of a helper process (see deadOwner): it
// makes a network in the host named by NSNET_HELPER_HOST with one member,
// the namespace NSNET_HELPER_NS, says "ready" and waits to be killed (or
// with NSNET_HELPER_CLOSE=1, closes the network and exits at once).
func TestHelperNetwork(t *testing.T) {
	if os.Getenv("NSNET_HELPER") != "network" {
		return // only a body for helper processes, as os/exec's TestHelperProcess
	}
	host, err := netns.Open(os.Getenv("NSNET_HELPER_HOST"))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.Open(os.Getenv("NSNET_HELPER_NS"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := network.Create(network.Config{HostNS: host, Uplink: "up0", Prefix: netip.MustParsePrefix("10.79.0.0/24"),
		Prefix6: netip.MustParsePrefix("fd00:79::/64")})
	if err != nil {
		t.Fatal(err)
	}
	m, err := n.Attach(ns, network.MemberConfig{Name: "helper", Ports: []nat.Port{{Protocol: "tcp", HostPort: 18090}}})
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("NSNET_HELPER_CLOSE") != "" {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		os.Exit(0) // at once: nothing may be left for later
	}
	fmt.Println("ready", m.HostVeth)
	select {}
}

func helper(t *testing.T, w *nstest.World, nsName string, env ...string) (*bufio.Reader, func()) {
	t.Helper()
	cmd := nstest.Child("TestHelperNetwork", append([]string{"NSNET_HELPER=network", "NSNET_HELPER_HOST=" + w.HostName,
		"NSNET_HELPER_NS=" + nsName}, env...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	kill := func() { cmd.Process.Kill(); cmd.Wait() }
	t.Cleanup(kill)
	return bufio.NewReader(out), kill
}

// TestDeadOwner: a process killed with a network and a member leaves them;
// nat.Sweep (of another process) removes all of it: the bridge, the pair,
// the entries of both tables, the resolv.conf, the forwarding.
func TestDeadOwner(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "ndo-")
	nstest.NewNS(t, "ndo-ns")
	// A dead owner's files that an earlier test left for a host namespace
	// whose inode number this world's host now has again (the kernel
	// reuses them) are not this test's: swept first.
	if _, err := nat.Sweep(w.Host); err != nil {
		t.Fatal(err)
	}
	before := hostState(t, w)
	r, kill := helper(t, w, "ndo-ns")
	line, err := r.ReadString('\n')
	if !strings.HasPrefix(line, "ready") {
		rest, _ := io.ReadAll(r)
		t.Fatalf("helper: %q, %v: %s", line, err, rest)
	}
	kill()
	if hostState(t, w) == before {
		t.Fatal("the killed helper left nothing: the test proves nothing")
	}
	if _, err := os.Stat("/etc/netns/ndo-ns/resolv.conf"); err != nil {
		t.Errorf("the helper's resolv.conf: %v", err)
	}
	res, err := nat.Sweep(w.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Sweep = %+v", res)
	if len(res.Links) != 2 || !res.Table || res.ResolvConfs != 1 {
		t.Errorf("Sweep = %+v, want the bridge and the member's port, the table, the resolv.conf", res)
	}
	if after := hostState(t, w); after != before {
		t.Errorf("host after Sweep:\n%s", diff(before, after))
	}
}

// TestExitRightAfterClose: a process that exits the moment Close returns
// leaves the host exactly as before, at once.
func TestExitRightAfterClose(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "nex-")
	nstest.NewNS(t, "nex-ns")
	before := hostState(t, w)
	for i := range 3 {
		cmd := nstest.Child("TestHelperNetwork", "NSNET_HELPER=network", "NSNET_HELPER_HOST="+w.HostName, "NSNET_HELPER_NS=nex-ns", "NSNET_HELPER_CLOSE=1")
		if out, err := cmd.Output(); err != nil {
			t.Fatalf("helper: %v: %s", err, out)
		}
		if after := hostState(t, w); after != before {
			t.Fatalf("host right after the helper's Close and exit (%d):\n%s", i, diff(before, after))
		}
	}
}

// TestIsolation: members of one network reach neither another network's
// members nor a Link's namespace, nor are reached by them; the outside
// reaches no member.
func TestIsolation(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "nis-")
	a := newNetwork(t, network.Config{HostNS: w.Host, Uplink: w.Uplink, Prefix: netip.MustParsePrefix("10.80.1.0/24"), NoDNS: true})
	b := newNetwork(t, network.Config{HostNS: w.Host, Uplink: w.Uplink, Prefix: netip.MustParsePrefix("10.80.2.0/24"), NoDNS: true})
	aNS, a1 := attach(t, a, "nis-a1", network.MemberConfig{})
	bNS, b1 := attach(t, b, "nis-b1", network.MemberConfig{})
	lNS := nstest.NewNS(t, "nis-l")
	l, err := nat.Config{HostNS: w.Host, DNS: nat.DNSNone}.Connect(lNS, w.Uplink, netip.MustParsePrefix("10.80.3.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, ns := range []*netns.Handle{aNS, bNS, lNS} {
		nstest.Listen(t, ns, ":8080")
	}
	var wg sync.WaitGroup
	for _, c := range []struct {
		from *netns.Handle
		name string
		to   netip.Addr
	}{{aNS, "a -> b", b1.Addr}, {bNS, "b -> a", a1.Addr}, {aNS, "a -> link", l.NSAddr.Addr()}, {lNS, "link -> a", a1.Addr},
		{w.Inet, "outside -> a", a1.Addr}} {
		wg.Add(1)
		go func() { // (at once: each waits for its dial's timeout)
			defer wg.Done()
			if _, err := nstest.Echo(c.from, netip.AddrPortFrom(c.to, 8080).String()); err == nil {
				t.Errorf("%s (%v): reached", c.name, c.to)
			}
		}()
	}
	wg.Wait()
	// (Controls: each reaches the outside.)
	nstest.Listen(t, w.Inet, "203.0.113.1:9000")
	for _, ns := range []*netns.Handle{aNS, bNS, lNS} {
		if _, err := nstest.Echo(ns, "203.0.113.1:9000"); err != nil {
			t.Errorf("control: %v", err)
		}
	}
}

// TestBadInput: bad input gets a clear error and changes nothing.
func TestBadInput(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "nbi-")
	before := hostState(t, w)
	for _, c := range []network.Config{
		{HostNS: w.Host},
		{HostNS: w.Host, Prefix: netip.MustParsePrefix("fd00::/64")},
		{HostNS: w.Host, Prefix: netip.MustParsePrefix("10.81.0.0/31")},
		{HostNS: w.Host, Prefix: netip.MustParsePrefix("10.81.0.1/24")},
		{HostNS: w.Host, Prefix6: netip.MustParsePrefix("fd00::/56")},
		{HostNS: w.Host, Prefix: netip.MustParsePrefix("10.81.0.0/24"), Bridge: "bad name"},
		{HostNS: w.Host, Prefix: netip.MustParsePrefix("10.81.0.0/24"), Uplink: "nosuch0"},
		{HostNS: w.Host, Prefix: netip.MustParsePrefix("10.81.0.0/24"), Bridge: w.Uplink},
	} {
		if n, err := network.Create(c); err == nil {
			n.Close()
			t.Errorf("Create(%+v) worked", c)
		} else {
			t.Logf("Create: %v", err)
		}
	}
	if after := hostState(t, w); after != before {
		t.Errorf("host after failed Creates:\n%s", diff(before, after))
	}
	n := newNetwork(t, network.Config{HostNS: w.Host, Uplink: w.Uplink, Prefix: netip.MustParsePrefix("10.81.0.0/29"), NoDNS: true})
	ns := nstest.NewNS(t, "nbi-ns")
	ns2 := nstest.NewNS(t, "nbi-ns2")
	if _, err := n.Attach(ns, network.MemberConfig{Name: "taken"}); err != nil {
		t.Fatal(err)
	}
	mid := hostState(t, w)
	for _, c := range []struct {
		ns *netns.Handle
		mc network.MemberConfig
		is error
	}{
		{nil, network.MemberConfig{}, network.ErrInvalidConfig},
		{w.Host, network.MemberConfig{}, network.ErrInvalidConfig},
		{ns2, network.MemberConfig{Name: "Taken"}, os.ErrExist},
		{ns2, network.MemberConfig{Name: "x", Aliases: []string{"X"}}, os.ErrExist},
		{ns2, network.MemberConfig{Name: "-bad"}, network.ErrInvalidConfig},
		{ns2, network.MemberConfig{Name: "a.b"}, network.ErrInvalidConfig},
		{ns2, network.MemberConfig{Addr: netip.MustParseAddr("10.81.0.1")}, network.ErrInvalidConfig}, // the gateway
		{ns2, network.MemberConfig{Addr: netip.MustParseAddr("10.81.0.7")}, network.ErrInvalidConfig}, // broadcast
		{ns2, network.MemberConfig{Addr: netip.MustParseAddr("10.81.0.2")}, os.ErrExist},
		{ns2, network.MemberConfig{Addr: netip.MustParseAddr("10.82.0.2")}, network.ErrInvalidConfig},
		{ns2, network.MemberConfig{Addr6: netip.MustParseAddr("fd00::2")}, network.ErrInvalidConfig},
		{ns2, network.MemberConfig{MAC: []byte{1, 2, 3, 4, 5, 6}}, network.ErrInvalidConfig},
		{ns2, network.MemberConfig{Interface: "bad/name"}, nil},
		{ns2, network.MemberConfig{Ports: []nat.Port{{Protocol: "sctp", HostPort: 1}}}, network.ErrInvalidConfig},
	} {
		m, err := n.Attach(c.ns, c.mc)
		switch {
		case err == nil:
			m.Close()
			t.Errorf("Attach(%+v) worked", c.mc)
		case c.is != nil && !errors.Is(err, c.is):
			t.Errorf("Attach(%+v) = %v, want %v", c.mc, err, c.is)
		default:
			t.Logf("Attach: %v", err)
		}
	}
	if after := hostState(t, w); after != mid {
		t.Errorf("host after failed Attaches:\n%s", diff(mid, after))
	}
	// The /29 has room for 5 members: the gateway .1, members .2 to .6.
	for i := range 4 {
		nsi := nstest.NewNS(t, fmt.Sprintf("nbi-f%d", i))
		if _, err := n.Attach(nsi, network.MemberConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.Attach(ns2, network.MemberConfig{}); err == nil || !strings.Contains(err.Error(), "no free address") {
		t.Errorf("Attach to a full network = %v", err)
	}
	// Zero values and closed networks.
	var zero network.Network
	if _, err := zero.Attach(ns2, network.MemberConfig{}); err == nil {
		t.Error("Attach on a zero Network worked")
	}
	if err := (&network.Member{}).Close(); err == nil {
		t.Error("Close of a zero Member worked")
	}
	if err := (*network.Network)(nil).Close(); err == nil {
		t.Error("Close of a nil Network worked")
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Attach(ns2, network.MemberConfig{}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Attach after Close = %v", err)
	}
	if after := hostState(t, w); after != before {
		t.Errorf("host after Close:\n%s", diff(before, after))
	}
}

// TestTwoProcesses: a network of another live process beside ours: each
// has its own bridge and entries in the shared tables; our Close and a
// Sweep leave the other's network whole (its member still reaches the
// outside), and its prefix cannot be taken while it lives.
func TestTwoProcesses(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "ntp-")
	otherNS := nstest.NewNS(t, "ntp-other")
	r, _ := helper(t, w, "ntp-other")
	line, err := r.ReadString('\n')
	if !strings.HasPrefix(line, "ready") {
		rest, _ := io.ReadAll(r)
		t.Fatalf("helper: %q, %v: %s", line, err, rest)
	}
	if _, err := network.Create(network.Config{HostNS: w.Host, Uplink: w.Uplink, Prefix: netip.MustParsePrefix("10.79.0.0/25")}); err == nil {
		t.Error("a prefix inside the other process's network was given again")
	}
	n := newNetwork(t, network.Config{HostNS: w.Host, Uplink: w.Uplink, Prefix: netip.MustParsePrefix("10.86.0.0/24")})
	mineNS := nstest.NewNS(t, "ntp-mine")
	if _, err := n.Attach(mineNS, network.MemberConfig{Name: "mine"}); err != nil {
		t.Fatal(err)
	}
	nstest.Listen(t, w.Inet, "203.0.113.1:9000")
	check := func(what string) {
		t.Helper()
		if seen, err := nstest.Echo(otherNS, "203.0.113.1:9000"); err != nil || seen != "203.0.113.2" {
			t.Errorf("%s: the other process's member -> outside: %q, %v", what, seen, err)
		}
		out := nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft", "list", "set", "bridge", "nsnet", "addrs")
		if !strings.Contains(out, "10.79.0.2") {
			t.Errorf("%s: the other process's anti-spoofing entry is gone:\n%s", what, out)
		}
	}
	check("both live")
	if res, err := nat.Sweep(w.Host); err != nil || len(res.Links) != 0 || res.Elements != 0 {
		t.Errorf("Sweep with both live = %+v, %v", res, err)
	}
	check("after Sweep")
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	check("after our Close")
}

// TestTwoNetworks: a namespace on two networks (eth0 and eth1) reaches
// the members of both and keeps the first network's default route; the
// two networks' other members still cannot reach each other, and closing
// its membership of one leaves the other working.
func TestTwoNetworks(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "n2n-")
	front := newNetwork(t, network.Config{HostNS: w.Host, Uplink: w.Uplink, Prefix: netip.MustParsePrefix("10.87.1.0/24"), NoDNS: true})
	back := newNetwork(t, network.Config{HostNS: w.Host, Uplink: w.Uplink, Prefix: netip.MustParsePrefix("10.87.2.0/24"), NoDNS: true})
	webNS, _ := attach(t, front, "n2n-web", network.MemberConfig{})
	dbNS, db := attach(t, back, "n2n-db", network.MemberConfig{})
	appNS, appFront := attach(t, front, "n2n-app", network.MemberConfig{})
	appBack, err := back.Attach(appNS, network.MemberConfig{Interface: "eth1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []*netns.Handle{webNS, dbNS, appNS} {
		nstest.Listen(t, ns, ":8080")
	}
	reach := func(from *netns.Handle, to netip.Addr) bool {
		_, err := nstest.Echo(from, netip.AddrPortFrom(to, 8080).String())
		return err == nil
	}
	if !reach(appNS, db.Addr) || !reach(dbNS, appBack.Addr) || !reach(webNS, appFront.Addr) {
		t.Error("the namespace on both networks does not reach both")
	}
	if reach(webNS, db.Addr) {
		t.Error("a member of front reached a member of back")
	}
	if out := nstest.Cmd(t, "ip", "-n", "n2n-app", "route", "show", "default"); !strings.Contains(out, "via 10.87.1.1 dev eth0") {
		t.Errorf("default route of the namespace on both networks: %s", out)
	}
	nstest.Listen(t, w.Inet, "203.0.113.1:9000")
	if seen, err := nstest.Echo(appNS, "203.0.113.1:9000"); err != nil || seen != "203.0.113.2" {
		t.Errorf("out from the namespace on both networks: %q, %v", seen, err)
	}
	if err := appBack.Close(); err != nil {
		t.Fatal(err)
	}
	if reach(appNS, db.Addr) || !reach(webNS, appFront.Addr) {
		t.Error("after leaving back: still reaches back, or no longer front")
	}
}

// TestChangedUnder: the host changes under a network: its bridge renamed
// (identity is the index: nothing changes), a member's port deleted by
// someone else, then the bridge itself deleted. Close still removes all
// that is left, says what was gone already (os.ErrNotExist), and leaves
// the host as before.
func TestChangedUnder(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "ncu-")
	before := hostState(t, w)
	n := newNetwork(t, network.Config{HostNS: w.Host, Uplink: w.Uplink, Prefix: netip.MustParsePrefix("10.88.0.0/24"),
		Prefix6: netip.MustParsePrefix("fd00:88::/64")})
	aNS, _ := attach(t, n, "ncu-a", network.MemberConfig{Name: "a"})
	_, b := attach(t, n, "ncu-b", network.MemberConfig{Name: "b"})
	_, c := attach(t, n, "ncu-c", network.MemberConfig{Name: "c"})
	in := func(args ...string) { nstest.Cmd(t, "ip", append([]string{"-n", w.HostName}, args...)...) }
	in("link", "set", n.Bridge, "name", "renamed0")
	nstest.Listen(t, w.Inet, "203.0.113.1:9000")
	if seen, err := nstest.Echo(aNS, "203.0.113.1:9000"); err != nil || seen != "203.0.113.2" {
		t.Errorf("out after the bridge's rename: %q, %v", seen, err)
	}
	in("link", "del", b.HostVeth)
	if err := b.Close(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close of a member whose port someone deleted = %v, want os.ErrNotExist", err)
	}
	in("link", "del", "renamed0")
	err := n.Close()
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close of a network whose bridge someone deleted = %v, want os.ErrNotExist", err)
	}
	t.Log(err)
	if err := c.Close(); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close of a member after its network's = %v", err)
	}
	if after := hostState(t, w); after != before {
		t.Errorf("host after Close:\n%s", diff(before, after))
	}
}

// TestStaleTable: nat's table made by an older nsnet (here: the current
// one without the rule that accepts members' bridged traffic) is refused
// with ErrStaleTable, changing nothing, rather than used silently.
func TestStaleTable(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "nst-")
	ns := nstest.NewNS(t, "nst-link")
	l, err := nat.Config{HostNS: w.Host, DNS: nat.DNSNone}.Connect(ns, w.Uplink, netip.MustParsePrefix("10.89.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	out := nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft", "-a", "list", "chain", "inet", "nsnet", "from_link")
	m := regexp.MustCompile(`within the link's own network.*# handle (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no such rule:\n%s", out)
	}
	nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft", "delete", "rule", "inet", "nsnet", "from_link", "handle", m[1])
	before := hostState(t, w)
	n, err := network.Create(network.Config{HostNS: w.Host, Uplink: w.Uplink, Prefix: netip.MustParsePrefix("10.89.2.0/24")})
	if !errors.Is(err, network.ErrStaleTable) {
		if n != nil {
			n.Close()
		}
		t.Fatalf("Create on a stale table = %v, want ErrStaleTable", err)
	}
	t.Log(err)
	if after := hostState(t, w); after != before {
		t.Errorf("host after the refused Create:\n%s", diff(before, after))
	}
}
