package nat_test

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// TestConcurrentCycles: 32 goroutines each run Connect/Close cycles on a
// namespace of their own. Every Connect must fully work (TCP through the
// NAT) and no two links may share a name; afterwards the host is as
// before and nothing leaked (threads, fds, goroutines).
func TestConcurrentCycles(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "conc-")
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	before := state(t, w)
	const workers, cycles = 32, 3
	var nss []*netns.Handle
	for i := range workers {
		nss = append(nss, nstest.NewNS(t, fmt.Sprintf("conc-%d", i)))
	}
	var mu sync.Mutex
	names := map[string]bool{}
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range cycles {
				p := netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 20+c, i))
				l, err := nat.Config{HostNS: w.Host}.Connect(nss[i], "up0", p)
				if err != nil {
					t.Errorf("worker %d cycle %d: %v", i, c, err)
					return
				}
				mu.Lock()
				if names[l.HostVeth] {
					t.Errorf("name %s given twice", l.HostVeth)
				}
				names[l.HostVeth] = true
				mu.Unlock()
				if from, err := nstest.Echo(nss[i], "203.0.113.1:8080"); err != nil || from != "203.0.113.2" {
					t.Errorf("worker %d cycle %d: traffic: %q %v", i, c, from, err)
				}
				if err := l.Close(); err != nil {
					t.Errorf("worker %d cycle %d: %v", i, c, err)
				}
			}
		}()
	}
	wg.Wait()
	sameState(t, w, before, "state after the cycles")
}

// TestHelperCycles is the body of TestTwoProcesses' helper processes: N
// Connect/Close cycles with traffic, on namespaces named by the helper.
func TestHelperCycles(t *testing.T) {
	if os.Getenv("NSNET_HELPER") != "cycles" {
		return // only a body for helper processes
	}
	host, err := netns.Open(os.Getenv("NSNET_HELPER_HOST"))
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	id, _ := strconv.Atoi(os.Getenv("NSNET_HELPER_ID"))
	ns, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	for c := range 15 {
		p := netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 40+id, c))
		l, err := nat.Config{HostNS: host}.Connect(ns, "up0", p)
		if err != nil {
			t.Fatalf("cycle %d: %v", c, err)
		}
		if from, err := nstest.Echo(ns, "203.0.113.1:8080"); err != nil || from != "203.0.113.2" {
			t.Fatalf("cycle %d: traffic: %q %v", c, from, err)
		}
		if err := l.Close(); err != nil {
			t.Fatalf("cycle %d: %v", c, err)
		}
	}
	fmt.Println("helper ok")
}

// TestTwoProcesses: two processes use the library on one host at the same
// time (each creating and removing the shared table as its links come and
// go); both succeed and the host is left as before.
func TestTwoProcesses(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "two-")
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	before := state(t, w)
	var wg sync.WaitGroup
	for id := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := nstest.Child("TestHelperCycles", "NSNET_HELPER=cycles", "NSNET_HELPER_HOST="+w.HostName, fmt.Sprintf("NSNET_HELPER_ID=%d", id))
			out, err := cmd.Output()
			if err != nil || !strings.Contains(string(out), "helper ok") {
				t.Errorf("helper %d: %v\n%s", id, err, out)
			}
		}()
	}
	wg.Wait()
	sameState(t, w, before, "state after two processes")
}

// TestCloseRegisterRace: the last link out of an uplink closes, and before
// its Close takes the host lock to give the uplink's forwarding back, a
// new Connect registers the uplink again. The new link keeps the
// forwarding (its traffic flows), and its own Close gives it back. (Seen
// under load as TestConcurrentCycles timing out: the late Close turned
// the forwarding off under the new link, and removed its entry.)
func TestCloseRegisterRace(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "crr-")
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	before := state(t, w)
	ns1, ns2 := nstest.NewNS(t, "crr-1"), nstest.NewNS(t, "crr-2")
	cfg := nat.Config{HostNS: w.Host, Prefix6: netip.MustParsePrefix("fd00:31::/64")}
	l1, err := cfg.Connect(ns1, "up0", netip.MustParsePrefix("10.31.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	blocked, release := make(chan struct{}), make(chan struct{})
	nat.SetFailHook(func(step string) error {
		if step == "close uplink release" {
			close(blocked)
			<-release
		}
		return nil
	})
	defer nat.SetFailHook(nil)
	closed := make(chan error, 1)
	go func() { closed <- l1.Close() }()
	<-blocked
	cfg.Prefix6 = netip.MustParsePrefix("fd00:32::/64")
	l2, err := cfg.Connect(ns2, "up0", netip.MustParsePrefix("10.31.2.0/24"))
	if err != nil {
		close(release)
		t.Fatal(err)
	}
	close(release)
	if err := <-closed; err != nil {
		t.Errorf("first Close: %v", err)
	}
	nat.SetFailHook(nil)
	for key, want := range map[string]string{"net.ipv4.conf.up0.forwarding": "1", "net.ipv6.conf.up0.force_forwarding": "1"} {
		if got := sysctl(t, w, key); got != want {
			t.Errorf("with the second link live: %s = %s", key, got)
		}
	}
	if from, err := nstest.Echo(ns2, "203.0.113.1:8080"); err != nil || from != "203.0.113.2" {
		t.Errorf("second link's traffic: %q %v", from, err)
	}
	if !nstest.Ping(t, "crr-2", "2001:db8::1") {
		t.Error("second link's IPv6 traffic failed")
	}
	if err := l2.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	sameState(t, w, before, "after both Closes")
}
