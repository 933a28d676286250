package netns_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

func ipNetnsList(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(nstest.Cmd(t, "ip", "netns", "list")), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	slices.Sort(names)
	return names
}

func TestNewOpenListDelete(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	nstest.CheckLeaks(t)

	h, err := netns.New("example-ns1")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if got := ipNetnsList(t); !slices.Contains(got, "example-ns1") {
		t.Fatalf("ip netns list = %v, want example-ns1 in it", got)
	}
	// ip netns exec sees a namespace with only lo, unlike the sandbox's.
	var links []struct{ Ifname string }
	out := nstest.Cmd(t, "ip", "netns", "exec", "example-ns1", "ip", "-j", "link")
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		t.Fatal(err)
	}
	if len(links) != 1 || links[0].Ifname != "lo" {
		t.Fatalf("links inside = %+v, want only lo", links)
	}

	o, err := netns.Open("example-ns1")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if !o.Equal(h) || h.Equal(nil) || !(*netns.Handle)(nil).Equal(nil) {
		t.Errorf("Equal: opened %v vs created %v, created vs current: %v", o, h, h.Equal(nil))
	}
	if o.Name() != "example-ns1" || !strings.HasPrefix(o.String(), "example-ns1 net:[") {
		t.Errorf("Name %q String %q", o.Name(), o.String())
	}

	// A namespace made by ip is opened and listed by the library.
	nstest.Cmd(t, "ip", "netns", "add", "from-ip")
	names, err := netns.List()
	if err != nil {
		t.Fatal(err)
	}
	if want := ipNetnsList(t); !slices.Equal(names, want) {
		t.Errorf("List() = %v, ip netns list = %v", names, want)
	}
	fromIP, err := netns.Open("from-ip")
	if err != nil {
		t.Fatal(err)
	}
	fromIP.Close()
	if err := netns.Delete("from-ip"); err != nil {
		t.Fatal(err)
	}

	if err := netns.Delete("example-ns1"); err != nil {
		t.Fatal(err)
	}
	if got := ipNetnsList(t); slices.Contains(got, "example-ns1") {
		t.Errorf("after Delete, ip netns list = %v", got)
	}
	if _, err := netns.Open("example-ns1"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open after Delete: %v, want ErrNotExist", err)
	}
	if err := netns.Delete("example-ns1"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("second Delete: %v, want ErrNotExist", err)
	}
	// The handle still works: the namespace lives while it is open.
	if err := h.Do(func() error { return nil }); err != nil {
		t.Errorf("Do on deleted but open namespace: %v", err)
	}
}

func TestNewExisting(t *testing.T) {
	nstest.Require(t)
	h, err := netns.New("dup")
	if err != nil {
		t.Fatal(err)
	}
	defer netns.Delete("dup")
	defer h.Close()
	if _, err := netns.New("dup"); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second New: %v, want ErrExist", err)
	}
}

func TestInvalidNames(t *testing.T) {
	// No privileges needed: nothing may reach the kernel.
	for _, name := range []string{"", ".", "..", "a/b", "/abs", "nul\x00", strings.Repeat("x", 256), "a\nb", "tab\t", "del\x7f"} {
		if _, err := netns.New(name); !errors.Is(err, netns.ErrInvalidName) {
			t.Errorf("New(%q) = %v, want ErrInvalidName", name, err)
		}
		if err := netns.Delete(name); !errors.Is(err, netns.ErrInvalidName) {
			t.Errorf("Delete(%q) = %v, want ErrInvalidName", name, err)
		}
		if _, err := netns.Open(name); !errors.Is(err, netns.ErrInvalidName) {
			t.Errorf("Open(%q) = %v, want ErrInvalidName", name, err)
		}
	}
	if err := netns.ValidateName(strings.Repeat("x", 255)); err != nil {
		t.Errorf("255-byte name refused: %v", err)
	}
}

func TestClosedHandle(t *testing.T) {
	nstest.Require(t)
	nstest.CheckLeaks(t)
	h, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if h.Fd() != -1 {
		t.Errorf("Fd after Close = %d", h.Fd())
	}
	if err := h.Do(func() error { return nil }); !errors.Is(err, netns.ErrClosed) {
		t.Errorf("Do on closed handle: %v, want ErrClosed", err)
	}
	if err := h.Run(exec.Command("true")); !errors.Is(err, netns.ErrClosed) {
		t.Errorf("Run on closed handle: %v, want ErrClosed", err)
	}
}

func TestOpenPathRejectsOtherFiles(t *testing.T) {
	nstest.Require(t)
	for _, p := range []string{"/proc/self/ns/mnt", "/etc/hostname", filepath.Join(t.TempDir(), "missing")} {
		if h, err := netns.OpenPath(p); err == nil {
			h.Close()
			t.Errorf("OpenPath(%s) succeeded", p)
		}
	}
	h, err := netns.OpenPID(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if !h.Equal(nil) {
		t.Errorf("OpenPID(self) = %v is not the current namespace", h)
	}
}

// TestDoConcurrent: 50 goroutines make 1,000 Do calls over 5 namespaces;
// each call must see its namespace, and no thread may stay in one after.
func TestDoConcurrent(t *testing.T) {
	nstest.Require(t)
	nstest.CheckLeaks(t)
	var nss []*netns.Handle
	for range 5 {
		h, err := netns.NewAnonymous()
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		nss = append(nss, h)
	}
	var wrong, calls atomic.Int64
	var wg sync.WaitGroup
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				h := nss[(g+i)%len(nss)]
				err := h.Do(func() error {
					calls.Add(1)
					cur, err := netns.Current()
					if err != nil {
						return err
					}
					defer cur.Close()
					if !cur.Equal(h) {
						wrong.Add(1)
					}
					return nil
				})
				if err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if calls.Load() != 1000 || wrong.Load() != 0 {
		t.Fatalf("%d calls, %d in the wrong namespace", calls.Load(), wrong.Load())
	}
}

func TestDoPanicRestoresThread(t *testing.T) {
	nstest.Require(t)
	nstest.CheckLeaks(t)
	h, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	func() {
		defer func() {
			if v := recover(); v != "boom" {
				t.Errorf("recovered %v, want boom", v)
			}
		}()
		h.Do(func() error { panic("boom") })
	}()
	want := errors.New("from fn")
	if err := h.Do(func() error { return want }); err != want {
		t.Errorf("Do returned %v, want fn's error", err)
	}
}

// TestNewRace: 10 goroutines race New for one name; one wins, the others
// get ErrExist, and exactly one entry and one mount remain.
func TestNewRace(t *testing.T) {
	nstest.Require(t)
	nstest.CheckLeaks(t)
	mounts := countMounts(t)
	var wg sync.WaitGroup
	var won atomic.Int64
	var handles sync.Map
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := netns.New("race")
			switch {
			case err == nil:
				won.Add(1)
				handles.Store(i, h)
			case !errors.Is(err, os.ErrExist):
				t.Errorf("New: %v, want nil or ErrExist", err)
			}
		}()
	}
	wg.Wait()
	handles.Range(func(_, v any) bool { v.(*netns.Handle).Close(); return true })
	if won.Load() != 1 {
		t.Fatalf("%d New calls succeeded, want 1", won.Load())
	}
	if got := countMounts(t); got != mounts+1 {
		t.Errorf("mounts: %d before, %d after one New", mounts, got)
	}
	if err := netns.Delete("race"); err != nil {
		t.Fatal(err)
	}
	if got := countMounts(t); got != mounts {
		t.Errorf("mounts: %d before, %d after Delete", mounts, got)
	}
}

// TestNewDeleteCycles: 1,000 New/Close/Delete leave fds and mounts as they
// were (CheckLeaks covers fds, threads and goroutines).
func TestNewDeleteCycles(t *testing.T) {
	nstest.Require(t)
	nstest.CheckLeaks(t)
	n := 1000
	if testing.Short() {
		n = 100
	}
	netns.List() // let the package prepare /run/netns before counting
	h, err := netns.New("warm")
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	netns.Delete("warm")
	mounts := countMounts(t)
	for i := range n {
		name := fmt.Sprintf("cycle-%d", i%7)
		h, err := netns.New(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
		if err := netns.Delete(name); err != nil {
			t.Fatal(err)
		}
	}
	if got := countMounts(t); got != mounts {
		t.Errorf("mounts: %d before, %d after %d cycles", mounts, got, n)
	}
	if names, _ := netns.List(); len(names) != 0 {
		t.Errorf("left behind: %v", names)
	}
}

func countMounts(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// TestStartSeesOnlyItsLinks: a command started in a namespace sees that
// namespace's links, not the caller's.
func TestStartSeesOnlyItsLinks(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	nstest.CheckLeaks(t)
	// A link in the sandbox (the "host" here) that must not be seen inside.
	nstest.Cmd(t, "ip", "link", "add", "outer0", "type", "veth", "peer", "name", "outer1")
	defer nstest.CmdErr("ip", "link", "del", "outer0")

	h, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	cmd := exec.Command("ip", "-o", "link", "show")
	out, err := outputIn(h, cmd)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "outer0") || !strings.Contains(out, "lo:") || strings.Count(out, "\n") != 1 {
		t.Fatalf("links inside:\n%s", out)
	}
	// And the caller's namespace did not change.
	out, _ = nstest.CmdErr("ip", "-o", "link", "show")
	if !strings.Contains(out, "outer0") {
		t.Fatalf("links outside:\n%s", out)
	}
}

func outputIn(h *netns.Handle, cmd *exec.Cmd) (string, error) {
	var b strings.Builder
	cmd.Stdout = &b
	err := h.Run(cmd)
	return b.String(), err
}
