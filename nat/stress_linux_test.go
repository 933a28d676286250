package nat_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/veth"
)

// stressFor is how long TestStress runs: 10 s, or NSNET_STRESS (a Go
// duration) by hand.
func stressFor(t *testing.T) time.Duration {
	d := 10 * time.Second
	if v := os.Getenv("NSNET_STRESS"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("NSNET_STRESS=%q: %v", v, err)
		}
	}
	return d
}

// TestHelperSweep is not a test: it is the body of the process that
// TestStress starts, which sweeps NSNET_HELPER_HOST in a loop until its
// standard input closes.
func TestHelperSweep(t *testing.T) {
	if os.Getenv("NSNET_HELPER") != "sweep" {
		return
	}
	host, err := netns.Open(os.Getenv("NSNET_HELPER_HOST"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { os.Stdin.Read(make([]byte, 1)); close(done) }()
	n := 0
	for {
		select {
		case <-done:
			fmt.Printf("swept %d times\n", n)
			return
		case <-time.After(20 * time.Millisecond):
		}
		if _, err := nat.Sweep(host); err != nil {
			t.Errorf("sweep %d: %v", n, err)
		}
		n++
	}
}

// TestStress runs at once, for stressFor: Connect and Close of dual-stack
// links with published ports (Publish and Unpublish while they live),
// CloseAll of batches, AddRules and Rules.Close on a pair made by hand, a
// firewall reload (nft flush ruleset) every 300 ms, Sweep from another
// process, uplink flaps, and a namespace sending UDP over IPv4 and IPv6
// while its link comes and goes. Errors that the host's changes explain
// (the uplink down, the ruleset flushed under a Close) are allowed; any
// other fails. Afterwards the table's links set holds exactly the live
// links, after a reload too; after the last Close nothing of nsnet's is
// left (links, table, forwarding, conntrack entries of the links); no
// packet with a private source reached the outside (the world's counter);
// and the race detector, under which CI runs it, reports nothing.
func TestStress(t *testing.T) {
	requireTools(t)
	nstest.RequireCmd(t, "conntrack")
	w := nstest.NewWorld(t, "str-")
	in := func(args ...string) string { return inHost(t, w, args...) }
	linksBefore := linkNames(t, w.HostName)
	// The uplink keeps its IPv6 address across the flaps below (the
	// kernel drops them when a link goes down otherwise).
	in("sysctl", "-qw", "net.ipv6.conf.up0.keep_addr_on_down=1")
	start := time.Now()
	deadline := start.Add(stressFor(t))
	// Reloads start half way: until then, not one packet may leave with a
	// private source; a reload deletes the table and the kernel's NAT
	// hooks with it, so until the guard puts it back (20 ms) packets do
	// (see nat's package doc, Firewall reloads): counted and logged.
	reloads := start.Add(stressFor(t) / 2)
	var wg sync.WaitGroup
	var unexplained atomic.Int32
	var counts, samples sync.Map // what ran, and an explained error of each kind, for the log
	count := func(what string) {
		n, _ := counts.LoadOrStore(what, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	}
	// explained: errors the host's changes cause (the uplink is down, the
	// ruleset or a rule was flushed under a Close or Unpublish).
	explained := func(err error) bool {
		s := fmt.Sprint(err)
		return errors.Is(err, os.ErrNotExist) || strings.Contains(s, "is down") || strings.Contains(s, "network is down") ||
			strings.Contains(s, "no IPv4 address") || strings.Contains(s, "no global IPv6 address") ||
			strings.Contains(s, "uplink forwarding")
	}
	fail := func(what string, err error) {
		switch {
		case err == nil:
		case explained(err):
			count("explained errors")
			if _, seen := samples.LoadOrStore(what, fmt.Sprint(err)); !seen {
				t.Logf("explained %s error: %v", what, err)
			}
		default:
			unexplained.Add(1)
			t.Errorf("%s: %v", what, err)
		}
	}
	loop := func(name string, every time.Duration, f func(i int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				f(i)
				count(name)
				time.Sleep(every)
			}
		}()
	}

	// Links that come and go, with ports; every third round in a batch
	// closed by CloseAll.
	for g := range 3 {
		ns := nstest.NewNS(t, fmt.Sprintf("str-ns%d", g))
		rng := rand.New(rand.NewPCG(uint64(g), 1))
		loop(fmt.Sprintf("cycle %d", g), 0, func(i int) {
			cfg := nat.Config{HostNS: w.Host, Prefix6: netip.MustParsePrefix(fmt.Sprintf("fd00:5%d::/64", g)),
				Ports: []nat.Port{{Protocol: "tcp", HostPort: uint16(8000 + g), NSPort: 80}}}
			l, err := cfg.Connect(ns, "up0", netip.MustParsePrefix(fmt.Sprintf("10.50.%d.0/24", g)))
			if err != nil {
				fail("connect", err)
				return
			}
			p := nat.Port{Protocol: "udp", HostPort: uint16(9000 + g), NSPort: 53}
			fail("publish", l.Publish(p))
			time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
			fail("unpublish", l.Unpublish(p))
			if i%3 == 0 {
				fail("closeall", nat.CloseAll(l))
			} else {
				fail("close", l.Close())
			}
		})
	}

	// AddRules on a pair made by hand.
	if err := veth.Create(w.Host, veth.Config{Name: "str-a", PeerName: "str-b", Up: true}); err != nil {
		t.Fatal(err)
	}
	loop("rules", 5*time.Millisecond, func(int) {
		r, err := nat.AddRules(w.Host, "str-a", "up0", netip.MustParsePrefix("10.51.0.0/24"))
		if err != nil {
			fail("add rules", err)
			return
		}
		fail("rules close", r.Close())
	})

	// A sender whose link comes and goes.
	sendNS := nstest.NewNS(t, "str-send")
	stop := make(chan struct{})
	sent := sender(t, sendNS, stop)
	sent6 := sender6(t, sendNS, stop, w.Outside6)
	loop("sender link", 0, func(int) {
		l, err := nat.Config{HostNS: w.Host, Prefix6: netip.MustParsePrefix("fd00:59::/64")}.
			Connect(sendNS, "up0", netip.MustParsePrefix("10.59.0.0/24"))
		if err != nil {
			fail("sender connect", err)
			return
		}
		time.Sleep(3 * time.Millisecond)
		fail("sender close", l.Close())
	})

	// The host changing under it.
	beforeReloads := make(chan int, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(time.Until(reloads))
		beforeReloads <- w.Leaks()
	}()
	loop("flush ruleset", 300*time.Millisecond, func(int) {
		if time.Now().After(reloads) {
			in("nft", "flush", "ruleset")
		}
	})
	loop("uplink flap", 700*time.Millisecond, func(int) {
		in("ip", "link", "set", "up0", "down")
		time.Sleep(5 * time.Millisecond)
		in("ip", "link", "set", "up0", "up")
	})
	sweeper := nstest.Child("TestHelperSweep", "NSNET_HELPER=sweep", "NSNET_HELPER_HOST="+w.HostName)
	sweepIn, err := sweeper.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var sweepOut strings.Builder
	sweeper.Stdout = &sweepOut
	if err := sweeper.Start(); err != nil {
		t.Fatal(err)
	}

	wg.Wait()
	close(stop)
	n4, n6 := <-sent, <-sent6
	if n := <-beforeReloads; n != 0 {
		t.Errorf("%d packets with a private source reached the outside before the first reload", n)
	}
	reloadLeaks := w.Leaks()
	w.AllowLeaks(reloadLeaks) // measured here (and none before the reloads)
	sweepIn.Close()
	if err := sweeper.Wait(); err != nil {
		t.Errorf("the sweeping process: %v\n%s", err, sweepOut.String())
	}
	var ran []string
	counts.Range(func(k, v any) bool { ran = append(ran, fmt.Sprintf("%s %d", k, v.(*atomic.Int64).Load())); return true })
	t.Logf("%v: %s; sent %d IPv4, %d IPv6 datagrams, of which %d left un-masqueraded during reloads; %s",
		stressFor(t), strings.Join(ran, ", "), n4, n6, reloadLeaks, strings.TrimSpace(sweepOut.String()))

	// The table holds exactly the live links, after a reload too.
	var live []*nat.Link
	for g := range 3 {
		l, err := nat.Config{HostNS: w.Host}.Connect(nstest.NewNS(t, fmt.Sprintf("str-live%d", g)), "up0",
			netip.MustParsePrefix(fmt.Sprintf("10.52.%d.0/24", g)))
		if err != nil {
			t.Fatal(err)
		}
		live = append(live, l)
	}
	want := map[string]bool{}
	for _, l := range live {
		want[l.HostVeth] = true
	}
	if got := linksSet(t, w); !equalSets(got, want) {
		t.Errorf("links set %v, live links %v", got, want)
	}
	in("nft", "flush", "ruleset")
	for start := time.Now(); !equalSets(linksSet(t, w), want) && time.Since(start) < 3*time.Second; {
		time.Sleep(50 * time.Millisecond)
	}
	if got := linksSet(t, w); !equalSets(got, want) {
		t.Errorf("after a reload: links set %v, live links %v", got, want)
	}
	if err := nat.CloseAll(live...); err != nil {
		t.Fatal(err)
	}
	if err := veth.Delete(w.Host, "str-a"); err != nil {
		t.Fatal(err)
	}

	// Nothing left.
	if got := linkNames(t, w.HostName); !equalStrings(got, linksBefore) {
		t.Errorf("host links after the last Close: %v, before: %v", got, linksBefore)
	}
	if out := in("nft", "list", "tables"); strings.Contains(out, "nsnet") {
		t.Errorf("the table after the last Close:\n%s", out)
	}
	if out := in("sysctl", "-n", "net.ipv4.conf.up0.forwarding", "net.ipv6.conf.up0.force_forwarding"); out != "0\n0\n" {
		t.Errorf("up0's forwarding after the last Close: %q", out)
	}
	if out, _ := exec.Command("ip", "netns", "exec", w.HostName, "conntrack", "-L", "-s", "10.50.0.0/16").CombinedOutput(); strings.Contains(string(out), "src=10.5") {
		t.Errorf("conntrack entries of closed links:\n%s", out)
	}
	if unexplained.Load() > 0 {
		t.Errorf("%d unexplained errors", unexplained.Load())
	}
}

// sender6 is sender for IPv6, to the outside host's address dst.
func sender6(t *testing.T, ns *netns.Handle, stop chan struct{}, dst netip.Addr) chan int {
	t.Helper()
	var c *net.UDPConn
	if err := ns.Do(func() (err error) { c, err = net.ListenUDP("udp6", nil); return err }); err != nil {
		t.Fatal(err)
	}
	sent := make(chan int, 1)
	go func() {
		n := 0
		to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9999))
		for {
			select {
			case <-stop:
				c.Close()
				sent <- n
				return
			case <-time.After(100 * time.Microsecond):
			}
			if _, err := c.WriteToUDP([]byte("probe"), to); err == nil {
				n++
			}
		}
	}()
	return sent
}

// linksSet reads the library's links set with nft -j: the host ends'
// names (nft names an iface_index by its link's name while it exists).
func linksSet(t *testing.T, w *nstest.World) map[string]bool {
	t.Helper()
	out, err := nstest.CmdErr("ip", "netns", "exec", w.HostName, "nft", "-j", "list", "set", "inet", "nsnet", "links")
	got := map[string]bool{}
	if err != nil {
		return got // no table
	}
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []any `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	for _, x := range doc.Nftables {
		if x.Set == nil {
			continue
		}
		for _, e := range x.Set.Elem {
			// A name, or {"elem": {"val": name, "comment": …}}.
			if m, ok := e.(map[string]any); ok {
				if el, ok := m["elem"].(map[string]any); ok {
					e = el["val"]
				}
			}
			got[fmt.Sprint(e)] = true
		}
	}
	return got
}

func equalSets(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func equalStrings(a, b []string) bool { return strings.Join(a, " ") == strings.Join(b, " ") }

// TestGuardOutlivesFirstLink: the reload guard runs for a host state's
// whole life, not its first link's: with the first link closed and a
// second still live, a reload (nft flush ruleset) is repaired by the guard
// alone (no Connect to notice it), within a second. It used the first
// link's handle to the host, closed with that link: restores failed, and
// a Connect waiting on the guard's table attempt got its error.
func TestGuardOutlivesFirstLink(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "gfl-")
	a, err := nat.Config{HostNS: w.Host}.Connect(nstest.NewNS(t, "gfl-a"), "up0", netip.MustParsePrefix("10.53.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := nat.Config{HostNS: w.Host}.Connect(nstest.NewNS(t, "gfl-b"), "up0", netip.MustParsePrefix("10.53.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft", "flush", "ruleset")
	want := map[string]bool{b.HostVeth: true}
	start := time.Now()
	for !equalSets(linksSet(t, w), want) && time.Since(start) < time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	if got := linksSet(t, w); !equalSets(got, want) {
		t.Fatalf("a second after the reload: links set %v, want %v", got, want)
	}
	t.Logf("restored in %v", time.Since(start).Round(time.Millisecond))
}
