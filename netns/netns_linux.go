package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"sync"

	"github.com/nsnet/nsnet/internal/nsthread"
	"golang.org/x/sys/unix"
)

// threadNSPath names the network namespace of the calling OS thread.
// /proc/self would name the thread group leader's, which is wrong as soon as
// any thread has switched.
const threadNSPath = nsthread.NetPath

func newHandle(fd int, name string) (*Handle, error) {
	// Never 0, 1 or 2: mdlayher/netlink reads a namespace fd of 0 as "the
	// calling thread's namespace", so a handle on fd 0 (free when a
	// program has closed its stdin) would make every operation act on the
	// caller's own namespace; 1 and 2 are where stray writes go.
	if fd < 3 {
		moved, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
		unix.Close(fd)
		if err != nil {
			return nil, err
		}
		fd = moved
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	h := &Handle{fd: &handleFD{}, name: name, dev: st.Dev, ino: st.Ino}
	h.fd.v.Store(int64(fd))
	runtime.AddCleanup(h, func(f *handleFD) { f.close() }, h.fd)
	return h, nil
}

// sysNew is New on Linux.
func sysNew(name string) (*Handle, error) {
	if err := ValidateName(name); err != nil {
		return nil, fmt.Errorf("netns: new: %w", err)
	}
	if err := prepareDir(); err != nil {
		return nil, fmt.Errorf("netns: new %q: %w", name, err)
	}
	path := filepath.Join(Dir, name)
	// O_EXCL makes the name the lock: of racing creators only one gets the
	// mount point, the rest see EEXIST and touch nothing.
	f, err := unix.Open(path, unix.O_RDONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o444)
	if err == unix.EEXIST {
		return nil, fmt.Errorf("netns: new %q: %w (a namespace of that name exists: Open it; if a run that was killed left it, Delete it, as \"ip netns del %s\" does)", name, err, name)
	}
	if err != nil {
		return nil, fmt.Errorf("netns: new %q: %w", name, err)
	}
	defer unix.Close(f)
	// The mount goes onto the file this call made, through its descriptor,
	// not onto whatever the path names by then: a Delete racing with this
	// New may have removed it and another New made a new one, and mounting
	// by path stacked two namespaces on one name (and Delete then failed
	// with EBUSY). On a removed file the mount fails (ENOENT).
	target := fmt.Sprintf("/proc/self/fd/%d", f)
	fd, err := unshareNet(func() error {
		return unix.Mount(threadNSPath, target, "none", unix.MS_BIND, "")
	})
	if err != nil {
		removeIfMine(path, f)
		return nil, fmt.Errorf("netns: new %q: %w", name, err)
	}
	h, err := newHandle(fd, name)
	if err != nil {
		unix.Unmount(target, unix.MNT_DETACH)
		removeIfMine(path, f)
		return nil, fmt.Errorf("netns: new %q: %w", name, err)
	}
	return h, nil
}

// removeIfMine removes path if it is still the file open as f, not one
// that another New made since.
func removeIfMine(path string, f int) {
	var a, b unix.Stat_t
	if unix.Fstat(f, &a) == nil && unix.Lstat(path, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino {
		unix.Unlink(path)
	}
}

// sysNewAnonymous is NewAnonymous on Linux.
func sysNewAnonymous() (*Handle, error) {
	fd, err := unshareNet(nil)
	if err != nil {
		return nil, fmt.Errorf("netns: new anonymous: %w", err)
	}
	h, err := newHandle(fd, "")
	if err != nil {
		return nil, fmt.Errorf("netns: new anonymous: %w", err)
	}
	return h, nil
}

// unshareNet creates a namespace on a locked thread of its own, runs inside
// (if not nil) while that thread is in it, and returns an fd to the new
// namespace.
func unshareNet(inside func() error) (int, error) {
	fd := -1
	err := nsthread.Run(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		return nil
	}, func() (err error) {
		if fd, err = unix.Open(threadNSPath, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return err
		}
		if inside != nil {
			return inside()
		}
		return nil
	}, false)
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, err
	}
	return fd, nil
}

var dirMu sync.Mutex

// prepareDir makes Dir a shared mount point, as iproute2's netns_add does, so
// that namespaces mounted there propagate to mount namespaces created later
// (ip netns exec makes one per command) and "ip netns del" in another mount
// namespace unmounts them everywhere. It runs for every New (one mount call),
// not once per process: Dir may have been replaced by another mount since.
func prepareDir() error {
	dirMu.Lock()
	defer dirMu.Unlock()
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return err
	}
	for bound := false; ; bound = true {
		err := unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if err != unix.EINVAL || bound {
			return fmt.Errorf("make %s shared: %w", Dir, err)
		}
		// EINVAL: Dir is not a mount point yet; bind it onto itself first.
		if err := unix.Mount(Dir, Dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", Dir, err)
		}
	}
}

// sysDelete is Delete on Linux.
func sysDelete(name string) error {
	if err := ValidateName(name); err != nil {
		return fmt.Errorf("netns: delete: %w", err)
	}
	path := filepath.Join(Dir, name)
	// MNT_DETACH as iproute2 does: a process still inside keeps it alive.
	// UMOUNT_NOFOLLOW: an entry that is a symbolic link is removed, not the
	// mount it points to. EINVAL means "not a mount point" (a half-made
	// entry, a link): remove it anyway.
	// EBUSY from the unlink: a New of the same name mounted its namespace
	// between the two steps; unmount that one too.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = unix.Unmount(path, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil && err != unix.EINVAL {
			return fmt.Errorf("netns: delete %q: %w", name, err)
		}
		if err = unix.Unlink(path); err != unix.EBUSY {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("netns: delete %q: %w", name, err)
	}
	return nil
}

// sysOpen is Open on Linux.
func sysOpen(name string) (*Handle, error) {
	if err := ValidateName(name); err != nil {
		return nil, fmt.Errorf("netns: open: %w", err)
	}
	h, err := openNS(filepath.Join(Dir, name), name)
	if err != nil {
		return nil, fmt.Errorf("netns: open %q: %w", name, err)
	}
	return h, nil
}

// sysOpenPath is OpenPath on Linux.
func sysOpenPath(path string) (*Handle, error) {
	h, err := openNS(path, "")
	if err != nil {
		return nil, fmt.Errorf("netns: open %s: %w", path, err)
	}
	return h, nil
}

// sysOpenPID is OpenPID on Linux.
func sysOpenPID(pid int) (*Handle, error) {
	return OpenPath(fmt.Sprintf("/proc/%d/ns/net", pid))
}

// sysCurrent is Current on Linux.
func sysCurrent() (*Handle, error) {
	return OpenPath(threadNSPath)
}

func openNS(path, name string) (*Handle, error) {
	// O_NONBLOCK: a FIFO put where a namespace should be must not block
	// the open forever (it is refused below, as any non-namespace file).
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	// NS_GET_NSTYPE (Linux 4.11) tells a network namespace from any other
	// file, including other namespace kinds.
	t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil || t != unix.CLONE_NEWNET {
		unix.Close(fd)
		if err == nil || err == unix.ENOTTY {
			err = unix.EINVAL
		}
		return nil, fmt.Errorf("not a network namespace: %w", err)
	}
	return newHandle(fd, name)
}

// sysList is List on Linux.
func sysList() ([]string, error) {
	ents, err := os.ReadDir(Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netns: list: %w", err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// sysDo is Do on Linux: fn may do anything, so a thread it moved into a
// namespace of another kind is ended (see nsthread.Run).
func (h *Handle) sysDo(fn func() error) error { return h.do(fn, true) }

// do is Do, checking the thread's other namespaces afterwards or not (the
// package's own functions, which change none).
func (h *Handle) do(fn func() error, checkOthers bool) error {
	if fn == nil {
		return fmt.Errorf("netns: Do with a nil function: %w", os.ErrInvalid)
	}
	if h == nil {
		return fn()
	}
	fd, err := h.liveFd()
	if err != nil {
		return err
	}
	defer runtime.KeepAlive(h)
	return nsthread.Run(func() error {
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return needPriv(fmt.Errorf("netns: enter %s: %w", h, err))
		}
		return nil
	}, fn, checkOthers)
}

// sysStart is Start on Linux.
func (h *Handle) sysStart(cmd *exec.Cmd) error {
	if cmd == nil {
		return fmt.Errorf("netns: Start with a nil *exec.Cmd: %w", os.ErrInvalid)
	}
	if a := cmd.SysProcAttr; a != nil && (a.Cloneflags|uintptr(a.Unshareflags))&unix.CLONE_NEWNET != 0 {
		// The child would start in a fresh namespace, not h's.
		return fmt.Errorf("netns: start in %s: SysProcAttr asks for a new network namespace (CLONE_NEWNET): %w", h, os.ErrInvalid)
	}
	if h == nil {
		return cmd.Start()
	}
	fd, err := h.liveFd()
	if err != nil {
		return err
	}
	defer runtime.KeepAlive(h)
	etc := EtcDir(h)
	ch := make(chan error, 1)
	go func() {
		// Locked and never unlocked: the thread's filesystem context is
		// its own from here on, so the runtime ends it when this
		// goroutine returns. Its namespaces are put back first all the
		// same: the main thread, which may run this, is parked instead.
		runtime.LockOSThread()
		origNet, err := unix.Open(threadNSPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- err
			return
		}
		defer unix.Close(origNet)
		origMnt, err := unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- err
			return
		}
		defer unix.Close(origMnt)
		defer unix.Setns(origNet, unix.CLONE_NEWNET)
		defer unix.Setns(origMnt, unix.CLONE_NEWNS)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			ch <- needPriv(fmt.Errorf("netns: enter %s: %w", h, err))
			return
		}
		if err := privateMounts(etc); err != nil {
			ch <- needPriv(fmt.Errorf("netns: start in %s: %w", h, err))
			return
		}
		err = cmd.Start()
		ch <- err
		if err == nil && cmd.SysProcAttr != nil && cmd.SysProcAttr.Pdeathsig != 0 {
			// The signal is sent when the thread that forked the child
			// ends: keep it until the child has exited (not reaped:
			// WNOWAIT leaves that to cmd.Wait).
			var info unix.Siginfo
			for {
				err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
				if err != unix.EINTR {
					break
				}
			}
		}
	}()
	return <-ch
}

// privateMounts gives the calling thread a mount namespace of its own, as
// ip netns exec gives its child: mounts no longer propagate back to the
// caller's, the files of etc are bound over /etc's, and /sys is a fresh
// sysfs of the thread's network namespace (read-only if /sys was).
func privateMounts(etc string) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "none", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make / a slave mount: %w", err)
	}
	if ents, err := os.ReadDir(etc); err == nil {
		for _, e := range ents {
			src, dst := filepath.Join(etc, e.Name()), filepath.Join("/etc", e.Name())
			// As ip netns exec: a file with no counterpart in /etc is
			// left out (a bind needs a target).
			if err := unix.Mount(src, dst, "none", unix.MS_BIND, ""); err != nil && err != unix.ENOENT {
				return fmt.Errorf("bind %s over %s: %w", src, dst, err)
			}
		}
	}
	var st unix.Statfs_t
	flags := uintptr(0)
	if unix.Statfs("/sys", &st) == nil && st.Flags&unix.ST_RDONLY != 0 {
		flags = unix.MS_RDONLY
	}
	if err := unix.Unmount("/sys", unix.MNT_DETACH); err != nil && err != unix.EINVAL {
		return fmt.Errorf("unmount /sys: %w", err)
	}
	if err := unix.Mount("sysfs", "/sys", "sysfs", flags, ""); err != nil {
		return fmt.Errorf("mount sysfs: %w", err)
	}
	return nil
}

// sysRun is Run on Linux.
func (h *Handle) sysRun(cmd *exec.Cmd) error {
	if cmd == nil {
		return fmt.Errorf("netns: Run with a nil *exec.Cmd: %w", os.ErrInvalid)
	}
	if err := h.Start(cmd); err != nil {
		return err
	}
	return cmd.Wait()
}

// currentIdentity is the calling thread's namespace's identity.
func currentIdentity() (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(threadNSPath, &st); err != nil {
		return nsID{}, err
	}
	return nsID{st.Dev, st.Ino}, nil
}

// closeFD closes a namespace file descriptor.
func closeFD(fd int) error { return unix.Close(fd) }

// liveFd returns the file descriptor, or an error matching [ErrClosed] if
// h is closed: Fd for callers that must not act on a closed handle.
func (h *Handle) liveFd() (int, error) {
	fd := h.Fd()
	if fd < 0 {
		return -1, fmt.Errorf("netns: %s: %w", h, ErrClosed)
	}
	return fd, nil
}
