package nat_test

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/veth"
)

// TestChurn: sequential create / connect / close / delete cycles (1,000 by
// default; NSNET_CHURN=10000 by hand) end with no device, namespace, entry,
// fd, goroutine or thread left, and memory flat: the heap and the thread
// count after the last cycle against after the 100th.
func TestChurn(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("NSNET_CHURN")); err == nil && v > 0 {
		n = v
	}
	w := nstest.NewWorld(t, "churn-")
	before := state(t, w)
	links := func() int {
		ls, err := veth.List(w.Host)
		if err != nil {
			t.Fatal(err)
		}
		return len(ls)
	}
	baseLinks := links()
	p := netip.MustParsePrefix("10.39.0.0/24")
	var heap100 uint64
	var threads100 int
	for i := range n {
		ns, err := netns.New("churn-ns")
		if err != nil {
			t.Fatal(err)
		}
		l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", p)
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if err := l.Close(); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		ns.Close()
		if err := netns.Delete("churn-ns"); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if i == 99 {
			heap100, threads100 = heapAndThreads()
		}
	}
	heap, threads := heapAndThreads()
	t.Logf("%d cycles: heap %d KiB after 100, %d KiB after all; threads %d, %d", n, heap100>>10, heap>>10, threads100, threads)
	if heap > heap100*3/2+1<<20 {
		t.Errorf("heap grew from %d KiB (100 cycles) to %d KiB (%d)", heap100>>10, heap>>10, n)
	}
	if threads > threads100+4 {
		t.Errorf("threads grew from %d (100 cycles) to %d (%d)", threads100, threads, n)
	}
	// The kernel finishes destroying the namespaces in the background.
	for range 200 {
		if links() == baseLinks {
			break
		}
		runtime.Gosched()
		nstest.CmdErr("sleep", "0.01")
	}
	if got := links(); got != baseLinks {
		t.Errorf("%d links in the host after the cycles, %d before", got, baseLinks)
	}
	if names, _ := netns.List(); len(names) != 2 { // the world's host and inet
		t.Errorf("named namespaces left: %v", names)
	}
	sameState(t, w, before, fmt.Sprintf("state after %d cycles", n))
}

func heapAndThreads() (uint64, int) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	tasks, _ := os.ReadDir("/proc/self/task")
	return m.HeapAlloc, len(tasks)
}

// TestTightCycles: Connect and Close of one namespace's link back to back,
// so that each Close is the host's last while the idle sockets of the one
// before are still being closed (it once deadlocked there: leave and the
// release of the owner socket took two locks in opposite orders).
func TestTightCycles(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "tight-")
	ns, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	done := make(chan error, 1)
	go func() {
		for i := range 500 {
			l, err := nat.Config{HostNS: w.Host, DNS: nat.DNSNone}.Connect(ns, "up0", netip.MustParsePrefix("10.71.0.0/24"))
			if err == nil {
				err = l.Close()
			}
			if err != nil {
				done <- fmt.Errorf("cycle %d: %w", i, err)
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("500 Connect/Close cycles did not finish in 2 minutes: deadlocked?")
	}
}
