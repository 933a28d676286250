package netns

import (
	"fmt"
	"os/exec"
	"path/filepath"
)

// New creates a network namespace named name, like "ip netns add NAME", and
// returns a handle to it. The namespace persists (bind-mounted under [Dir])
// after the handle is closed, until [Delete].
//
// No thread of the caller changes namespace. An existing name gives an error
// matching os.ErrExist; an invalid one, [ErrInvalidName], before anything is
// created. Concurrent calls with the same name are safe: exactly one wins.
// Needs CAP_SYS_ADMIN.
func New(name string) (*Handle, error) {
	v, err := sysNew(name)
	return v, needPriv(err)
}

// NewAnonymous creates a network namespace with no name: it lives exactly as
// long as the returned handle (and whatever else the caller attaches to it,
// such as processes or sockets). Needs CAP_SYS_ADMIN.
func NewAnonymous() (*Handle, error) {
	v, err := sysNewAnonymous()
	return v, needPriv(err)
}

// Delete removes the named namespace, like "ip netns del NAME": it unmounts
// and removes /run/netns/NAME. The namespace itself is freed by the kernel
// once nothing else refers to it (open handles keep it alive). A missing name
// gives an error matching os.ErrNotExist. Needs CAP_SYS_ADMIN.
func Delete(name string) error { return needPriv(sysDelete(name)) }

// Open opens the named namespace under [Dir], made by [New] or by
// "ip netns add". A missing name gives an error matching os.ErrNotExist.
func Open(name string) (*Handle, error) { return sysOpen(name) }

// OpenPath opens the network namespace file at path, such as
// /proc/PID/ns/net or a bind mount made by another tool. A file that is not
// a network namespace is refused with unix.EINVAL.
func OpenPath(path string) (*Handle, error) { return sysOpenPath(path) }

// OpenPID opens the network namespace of process pid.
func OpenPID(pid int) (*Handle, error) { return sysOpenPID(pid) }

// Current opens the network namespace of the calling OS thread. For an
// ordinary Go program that has not locked a thread into another namespace,
// that is the namespace the process runs in.
func Current() (*Handle, error) { return sysCurrent() }

// List returns the names of the namespaces under [Dir], sorted, like
// "ip netns list". A missing Dir means none.
func List() ([]string, error) { return sysList() }

// Do runs fn on an OS thread that is inside h's namespace and returns fn's
// error. The calling goroutine's thread is never moved: fn runs on a fresh
// goroutine locked to its own thread, which is switched back afterwards (or
// discarded by the runtime if that fails). A panic in fn is re-raised in the
// caller after the thread has been restored.
//
// Only code running on that thread is inside the namespace: goroutines that
// fn starts run on other threads and do NOT inherit it. Sockets opened in fn
// stay in the namespace for their whole life, wherever they are used later.
// A nil h runs fn directly in the caller's current namespace. Entering a
// namespace needs CAP_SYS_ADMIN.
//
// If fn moves its thread into a namespace of another kind (unshare or setns
// of a mount, uts, ipc or cgroup namespace, or of the pid or time namespace
// for its children) or gives it a filesystem context of its own (unshare of
// CLONE_FS, then chdir or chroot), the thread is ended instead of going back
// to the runtime, and Do returns once it is gone: no other goroutine, and no
// child that os/exec starts, ever runs in what fn made. Checking costs about
// 30 us per Do.
func (h *Handle) Do(fn func() error) error { return h.sysDo(fn) }

// Start starts cmd with its process inside h's namespace, as
// "ip netns exec" does: the child also gets a mount namespace of its own in
// which every file of the namespace's configuration directory ([EtcDir]:
// /etc/netns/NAME for a named namespace) is bound over the file of the same
// name in /etc (its resolv.conf, hosts...), and /sys is mounted afresh so
// that /sys/class/net shows the namespace's links. The caller's mounts
// never change. The child is forked from a thread of its own inside the
// namespace, which is then discarded (or, with SysProcAttr.Pdeathsig set,
// kept until the child exits, since that signal follows the thread); the
// caller's threads are not moved. The caller's other SysProcAttr settings
// apply. Wait for it with cmd.Wait as usual. A nil h starts cmd in the
// current namespace, with nothing remounted.
func (h *Handle) Start(cmd *exec.Cmd) error { return h.sysStart(cmd) }

// EtcDir is the namespace's configuration directory, whose files
// [Handle.Start] binds over /etc's: /etc/netns/NAME for a namespace with a
// name (where "ip netns exec" looks too), and for an anonymous one
// /run/netns-etc/ID, ID its [Handle.ID]. nat.Connect writes the
// namespace's resolv.conf there. "" for a nil or closed handle.
func EtcDir(h *Handle) string {
	switch {
	case h.Fd() < 0:
		return ""
	case h.Name() != "":
		return filepath.Join(EtcRoot, h.Name())
	}
	return fmt.Sprintf("%s/%d", AnonEtcRoot, h.ID())
}

// EtcRoot holds the configuration directories of named namespaces, as for
// iproute2; AnonEtcRoot those of anonymous ones.
const (
	EtcRoot     = "/etc/netns"
	AnonEtcRoot = "/run/netns-etc"
)

// Run starts cmd inside h's namespace like [Handle.Start] and waits for it.
func (h *Handle) Run(cmd *exec.Cmd) error { return h.sysRun(cmd) }
