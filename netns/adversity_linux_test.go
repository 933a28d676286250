package netns_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/veth"
	"golang.org/x/sys/unix"
)

// Regression tests for issue 19: a handle must never mean another
// namespace, and no thread may be left in one.

// TestHandleNeverOnFDZero: with fd 0 free, New used to return a handle on
// fd 0, which mdlayher/netlink reads as "the calling thread's namespace":
// the pair was then made in the caller's namespace.
func TestHandleNeverOnFDZero(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	made, err := netns.New("fd0-ns")
	if err != nil {
		t.Fatal(err)
	}
	made.Close()
	defer netns.Delete("fd0-ns")
	if err := unix.Close(0); err != nil {
		t.Fatal(err)
	}
	defer func() { // give the process its stdin back, as /dev/null
		if fd, err := unix.Open("/dev/null", unix.O_RDONLY, 0); err == nil && fd != 0 {
			unix.Dup2(fd, 0)
			unix.Close(fd)
		}
	}()
	h, err := netns.Open("fd0-ns") // the first free fd is 0
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.Fd() < 3 {
		t.Errorf("handle on fd %d", h.Fd())
	}
	if err := veth.Create(h, veth.Config{Name: "fd0a", PeerName: "fd0b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := nstest.CmdErr("ip", "-n", "fd0-ns", "link", "show", "fd0a"); err != nil {
		t.Errorf("the pair is not in the handle's namespace: %v", err)
	}
	if _, err := nstest.CmdErr("ip", "link", "show", "fd0a"); err == nil {
		t.Error("the pair was made in the caller's namespace")
		nstest.CmdErr("ip", "link", "del", "fd0a")
	}
}

// TestDoLeavesNoThreadBehind: whatever fn does on the namespace's thread
// (return, panic, runtime.Goexit as t.Fatal does, UnlockOSThread followed
// by blocking, setns or unshare elsewhere), Do returns and every thread of
// the process is back in its own namespace.
func TestDoLeavesNoThreadBehind(t *testing.T) {
	nstest.Require(t)
	nstest.CheckLeaks(t) // every thread's /proc/self/task/*/ns/net, at the end
	h, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	other, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	home, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]func() error{
		"return": func() error { return nil },
		"Goexit": func() error { runtime.Goexit(); return nil },
		"Unlock and block": func() error {
			runtime.UnlockOSThread()
			time.Sleep(20 * time.Millisecond)
			return nil
		},
		"setns elsewhere": func() error { return unix.Setns(other.Fd(), unix.CLONE_NEWNET) },
		"unshare":         func() error { return unix.Unshare(unix.CLONE_NEWNET) },
	}
	for name, fn := range cases {
		done := make(chan error, 1)
		go func() { done <- h.Do(fn) }()
		select {
		case err := <-done:
			if (name == "Goexit") != (err != nil) {
				t.Errorf("%s: Do returned %v", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Do did not return", name)
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a panic in fn was not re-raised")
			}
		}()
		h.Do(func() error { panic("in the namespace") })
	}()
	// 200 fresh goroutines, each on whatever thread the runtime gives it:
	// none may find itself in h's namespace.
	stray := make(chan string, 200)
	for range 200 {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			ns, _ := os.Readlink("/proc/thread-self/ns/net")
			stray <- ns
		}()
	}
	for range 200 {
		if ns := <-stray; ns != home {
			t.Fatalf("a goroutine ran in %s, not %s", ns, home)
		}
	}
}

// TestStartRefusesNewNetwork: a command asking for a fresh network
// namespace of its own would not start in h's: refused.
func TestStartRefusesNewNetwork(t *testing.T) {
	nstest.Require(t)
	h, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, attr := range []*syscall.SysProcAttr{{Cloneflags: syscall.CLONE_NEWNET}, {Unshareflags: syscall.CLONE_NEWNET}} {
		cmd := exec.Command("true")
		cmd.SysProcAttr = attr
		if err := h.Start(cmd); !errors.Is(err, os.ErrInvalid) {
			t.Errorf("Start with %+v: %v, want os.ErrInvalid", attr, err)
			if err == nil {
				cmd.Wait()
			}
		}
	}
}

// TestOpenFIFO: a FIFO where a namespace should be is refused at once,
// not waited on forever.
func TestOpenFIFO(t *testing.T) {
	nstest.Require(t)
	os.MkdirAll(netns.Dir, 0o755)
	path := filepath.Join(netns.Dir, "fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(path)
	done := make(chan error, 2)
	go func() { _, err := netns.Open("fifo"); done <- err }()
	go func() { _, err := netns.OpenPath(path); done <- err }()
	for range 2 {
		select {
		case err := <-done:
			if !errors.Is(err, unix.EINVAL) {
				t.Errorf("open of a FIFO: %v, want EINVAL (not a namespace)", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("open of a FIFO blocks")
		}
	}
}

// TestDroppedHandleIsClosed: a Handle dropped without Close does not keep
// its descriptor (and namespace) until the process exits.
func TestDroppedHandleIsClosed(t *testing.T) {
	nstest.Require(t)
	h, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	fd := h.Fd()
	target, _ := os.Readlink("/proc/self/fd/" + itoa(fd))
	h = nil
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		runtime.GC()
		if now, err := os.Readlink("/proc/self/fd/" + itoa(fd)); err != nil || now != target {
			return // closed (or reused for something else)
		}
	}
	t.Errorf("fd %d of a dropped handle is still open", fd)
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestDeleteSymlinkEntry: deleting an entry that is a symbolic link removes
// the link, not the mount of the namespace it points to.
func TestDeleteSymlinkEntry(t *testing.T) {
	nstest.Require(t)
	h, err := netns.New("real-ns")
	if err != nil {
		t.Fatal(err)
	}
	defer netns.Delete("real-ns")
	defer h.Close()
	link := filepath.Join(netns.Dir, "alias-ns")
	if err := os.Symlink(filepath.Join(netns.Dir, "real-ns"), link); err != nil {
		t.Fatal(err)
	}
	if err := netns.Delete("alias-ns"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(link); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the symbolic link is still there: %v", err)
	}
	g, err := netns.Open("real-ns")
	if err != nil {
		t.Fatalf("the namespace it pointed to lost its mount: %v", err)
	}
	if !g.Equal(h) {
		t.Error("real-ns is another namespace now")
	}
	g.Close()
}

// TestDirSharedAgain: with /run/netns replaced by a fresh private mount,
// the next New makes it a shared mount again (as ip netns add does), so
// its namespaces show in mount namespaces made later.
func TestDirSharedAgain(t *testing.T) {
	nstest.Require(t)
	h, err := netns.New("share-a")
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	netns.Delete("share-a")
	// A fresh private tmpfs over the directory (the sandbox's own stays
	// below it and comes back after the test).
	if err := unix.Mount("tmpfs", netns.Dir, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(netns.Dir, unix.MNT_DETACH)
	if err := unix.Mount("", netns.Dir, "", unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	h, err = netns.New("share-b")
	if err != nil {
		t.Fatal(err)
	}
	defer netns.Delete("share-b")
	defer h.Close()
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(info), "\n") {
		if f := strings.Fields(l); len(f) > 6 && f[4] == netns.Dir {
			line = l // the last one is the top mount
		}
	}
	if !strings.Contains(line, "shared:") {
		t.Errorf("%s is not a shared mount after New:\n%s", netns.Dir, line)
	}
}

// TestNewDeleteRace: New and Delete of one name from 8 goroutines: never
// two namespaces mounted on the name, never EBUSY from Delete.
func TestNewDeleteRace(t *testing.T) {
	nstest.Require(t)
	nstest.CheckLeaks(t)
	errs := make(chan error, 8*40)
	done := make(chan bool)
	for g := range 8 {
		go func() {
			defer func() { done <- true }()
			for i := range 40 {
				if (g+i)%2 == 0 {
					if h, err := netns.New("race-ns"); err == nil {
						h.Close()
					}
				} else if err := netns.Delete("race-ns"); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs <- err
				}
			}
		}()
	}
	for range 8 {
		<-done
	}
	close(errs)
	for err := range errs {
		t.Errorf("Delete: %v", err)
	}
	info, _ := os.ReadFile("/proc/self/mountinfo")
	mounts := strings.Count(string(info), filepath.Join(netns.Dir, "race-ns")+" ")
	if mounts > 1 {
		t.Errorf("%d namespaces mounted on one name", mounts)
	}
	netns.Delete("race-ns")
	info, _ = os.ReadFile("/proc/self/mountinfo")
	if n := strings.Count(string(info), filepath.Join(netns.Dir, "race-ns")+" "); n != 0 {
		t.Errorf("%d mounts left after the last Delete", n)
	}
}

// TestDoOtherNamespaceKinds: fn unshares a namespace of another kind on
// Do's thread (mount, uts, ipc, cgroup, pid and time for its children;
// a user namespace cannot be unshared by a multithreaded process). After Do
// returns, no thread of the process is in a namespace of that kind other
// than the process's own: the thread was ended, not handed back to the
// runtime. Oracles: every thread's /proc/self/task/*/ns/KIND, what a
// locked goroutine on any thread reads, the host name other goroutines
// see (uts), the pid a child gets (pid: 1 in a new pid namespace), and
// for an unshared filesystem context, the working directory.
func TestDoOtherNamespaceKinds(t *testing.T) {
	nstest.Require(t)
	h, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	kinds := []struct {
		name string // in /proc/PID/ns
		flag int
	}{
		{"mnt", unix.CLONE_NEWNS}, {"uts", unix.CLONE_NEWUTS}, {"ipc", unix.CLONE_NEWIPC},
		{"cgroup", unix.CLONE_NEWCGROUP}, {"pid_for_children", unix.CLONE_NEWPID},
		{"time_for_children", unix.CLONE_NEWTIME},
	}
	hostname, _ := os.Hostname()
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			home, err := os.Readlink("/proc/self/ns/" + k.name)
			if err != nil {
				t.Fatal(err)
			}
			for range 5 {
				err := h.Do(func() error {
					if err := unix.Unshare(k.flag); err != nil {
						return err
					}
					if k.flag == unix.CLONE_NEWUTS {
						return unix.Sethostname([]byte("moved-by-fn"))
					}
					return nil
				})
				if err != nil {
					t.Fatalf("unshare in Do: %v", err)
				}
			}
			tasks, _ := filepath.Glob("/proc/self/task/*/ns/" + k.name)
			for _, p := range tasks {
				if ns, err := os.Readlink(p); err == nil && ns != home {
					t.Errorf("%s is %s, not the process's %s", p, ns, home)
				}
			}
			seen := make(chan string, 100)
			for range 100 {
				go func() {
					runtime.LockOSThread()
					defer runtime.UnlockOSThread()
					ns, _ := os.Readlink("/proc/thread-self/ns/" + k.name)
					if n, _ := os.Hostname(); n != hostname {
						ns += " with host name " + n
					}
					seen <- ns
				}()
			}
			for range 100 {
				if ns := <-seen; ns != home {
					t.Fatalf("a goroutine ran in %s, not %s", ns, home)
				}
			}
			if k.flag == unix.CLONE_NEWPID {
				for range 10 {
					out, err := exec.Command("sh", "-c", "echo $$").Output()
					if err != nil {
						t.Fatal(err)
					}
					if strings.TrimSpace(string(out)) == "1" {
						t.Fatal("a child started as pid 1 of a new pid namespace")
					}
				}
			}
		})
	}
	t.Run("fs", func(t *testing.T) {
		// Not a namespace, but the same hazard: a working directory (or
		// root, or umask) of the thread's own.
		home, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		for range 5 {
			err := h.Do(func() error {
				if err := unix.Unshare(unix.CLONE_FS); err != nil {
					return err
				}
				return unix.Chdir(dir)
			})
			if err != nil {
				t.Fatalf("unshare and chdir in Do: %v", err)
			}
		}
		seen := make(chan string, 100)
		for range 100 {
			go func() {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				wd, _ := os.Readlink("/proc/thread-self/cwd")
				seen <- wd
			}()
		}
		for range 100 {
			if wd := <-seen; wd != home {
				t.Fatalf("a goroutine ran in %s, not %s", wd, home)
			}
		}
	})
	t.Run("user", func(t *testing.T) {
		err := h.Do(func() error { return unix.Unshare(unix.CLONE_NEWUSER) })
		if !errors.Is(err, unix.EINVAL) {
			t.Errorf("unshare(CLONE_NEWUSER) in Do: %v, want EINVAL (a multithreaded process cannot)", err)
		}
	})
}
