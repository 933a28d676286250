// Package nsthread runs code on an OS thread moved into another network
// namespace, and makes sure the thread goes back (or is ended) before any
// other goroutine can run on it: the one place where nsnet's threads
// change namespace (netns.Do, netns.New, and the library's own switches
// through nl.Do).
package nsthread

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// NetPath names the network namespace of the calling OS thread.
const NetPath = "/proc/thread-self/ns/net"

// Run runs fn on a fresh goroutine locked to its own OS thread, after
// enter has moved that thread into another network namespace, and then
// moves the thread back where it was. The caller's thread never moves.
//
// Whatever fn does, the thread goes back or dies: it is moved back by a
// deferred call, which runs when fn returns, panics or calls
// runtime.Goexit (as t.Fatal does); the thread is locked twice, so a
// runtime.UnlockOSThread in fn neither lets the goroutine wander off the
// thread nor lets others onto it while it is in the namespace; and if
// moving back fails, the goroutine exits still locked, so the Go runtime
// ends the thread instead of reusing it in the wrong namespace. A panic in
// fn is re-raised in the caller, after the thread is back; a Goexit in fn
// is an error.
//
// With checkOthers (for functions the library does not know, as
// netns.Do's), a thread that fn moved into another namespace of any other
// kind (see otherKinds) is ended the same way: the runtime would give it to
// other goroutines, and os/exec would start children from it.
func Run(enter, fn func() error, checkOthers bool) error {
	ch := make(chan result, 1)
	go func() {
		// One lock more than work's: a thread work leaves locked (to be
		// ended) stays locked after this one is undone.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if checkOthers && unix.Gettid() == unix.Getpid() {
			// The main thread: the runtime cannot end it (it parks it for
			// good, still in fn's namespaces, where the kernel reports it
			// as the process's own). Hold it while fn runs elsewhere.
			done := make(chan struct{})
			go func() {
				defer close(done)
				work(enter, fn, checkOthers, ch)
			}()
			<-done
			return
		}
		work(enter, fn, checkOthers, ch)
	}()
	r := <-ch
	if r.ended != 0 {
		awaitEnd(r.ended)
	}
	switch {
	case r.panicked:
		panic(r.panicVal)
	case r.goexit:
		return errors.Join(r.err, errors.New("netns: the function called runtime.Goexit (t.Fatal, t.SkipNow?) on the namespace's thread; the thread was moved back"))
	}
	return r.err
}

// result is how fn ended on its thread.
type result struct {
	err      error
	panicked bool
	panicVal any
	goexit   bool
	ended    int // the thread's id, when it is being ended
}

// work is Run's goroutine: it locks its thread, enters, runs fn and moves
// the thread back (or ends it), and sends how fn ended.
func work(enter, fn func() error, checkOthers bool, ch chan<- result) {
	runtime.LockOSThread()
	runtime.LockOSThread()
	r := result{goexit: true} // unless fn returns or panics
	orig, err := unix.Open(NetPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		runtime.UnlockOSThread()
		ch <- result{err: err}
		return
	}
	moved := false
	defer func() {
		defer unix.Close(orig)
		if moved {
			if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
				r.err = errors.Join(r.err, fmt.Errorf("restore thread namespace: %w", err))
				r.ended = unix.Gettid()
				ch <- r
				return // still locked: the runtime ends the thread
			}
			if checkOthers && !threadIsHome() {
				// fn moved the thread into another namespace of some
				// other kind (unshare or setns of mount, uts, ipc, cgroup,
				// or pid or time for its children): still locked, so the
				// runtime ends the thread rather than give it to other
				// goroutines.
				r.ended = unix.Gettid()
				ch <- r
				return
			}
		}
		runtime.UnlockOSThread()
		runtime.UnlockOSThread()
		ch <- r
	}()
	if err := enter(); err != nil {
		r = result{err: err} // the thread did not move
		return
	}
	moved = true
	func() {
		defer func() {
			if v := recover(); v != nil {
				r = result{panicked: true, panicVal: v}
			}
		}()
		err := fn()
		r = result{err: err}
	}()
}

// otherKinds are the namespaces of a thread besides its network namespace
// that code on it can change (unshare, setns): the mount namespace (with
// the filesystem context unshared), uts, ipc, cgroup, and the pid and time
// namespaces its children get. (A user namespace cannot be changed by a
// thread of a multithreaded process.)
var otherKinds = [...]string{
	"/proc/thread-self/ns/mnt", "/proc/thread-self/ns/uts", "/proc/thread-self/ns/ipc",
	"/proc/thread-self/ns/cgroup", "/proc/thread-self/ns/pid_for_children",
	"/proc/thread-self/ns/time_for_children", "/proc/thread-self/ns/user",
}

// nsIDs are a thread's namespaces of otherKinds, as the kernel names them
// ("mnt:[4026531841]"; empty for a kind the kernel lacks).
type nsIDs [len(otherKinds)][40]byte

// homeNS is the main thread's, read at start (package initialisation runs
// on the main thread): the namespaces every thread of the process has
// unless code on it moved it.
var homeNS = threadNS()

func threadNS() (ids nsIDs) {
	for i, p := range otherKinds {
		unix.Readlink(p, ids[i][:])
	}
	return ids
}

// threadIsHome reports whether the calling thread shares the main
// thread's filesystem context and is in the process's own namespaces of
// otherKinds. One readlink each (about 4 us): cheaper than
// reading them before and after, and a thread moved before Do, by someone
// else, is not handed back to the runtime either.
func threadIsHome() bool {
	if sharesFS() == errNotShared {
		return false
	}
	var buf [40]byte
	for i, p := range otherKinds {
		clear(buf[:])
		if unix.Readlink(p, buf[:]); buf != homeNS[i] {
			return false
		}
	}
	return true
}

// awaitEnd waits (up to a second) until the thread tid of this process has
// ended, so that no thread in a foreign namespace is left when Run returns:
// the runtime ends a thread whose goroutine exits locked right after that
// goroutine's last step, which is after it sent its result.
func awaitEnd(tid int) {
	path := fmt.Sprintf("/proc/self/task/%d", tid)
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Microsecond) {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return
		}
	}
}

// kcmpFS is KCMP_FS (linux/kcmp.h): whether two tasks share their
// filesystem context (root, working directory, umask).
const kcmpFS = 3

// sharesFS checks that the calling thread still shares the main thread's
// filesystem context: unshare(CLONE_FS) or CLONE_NEWNS gives it its own,
// after which a chdir or chroot on it would be its alone. nil if it
// shares it; errNotShared if not; the kcmp error if the kernel cannot tell
// (ENOSYS without CONFIG_KCMP, EPERM under some seccomp filters).
func sharesFS() error {
	pid := unix.Getpid()
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(unix.Gettid()), uintptr(pid), kcmpFS, 0, 0, 0)
	switch {
	case e != 0:
		return e
	case r != 0:
		return errNotShared
	}
	return nil
}

var errNotShared = errors.New("filesystem context not shared with the main thread")
