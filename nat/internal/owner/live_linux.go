package owner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// bindAbstract binds a new unix socket to the abstract name (without its
// leading @) in the calling thread's network namespace.
func bindAbstract(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: "@" + name}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func socketName(id string) string { return "nsnet-owner-" + id }

// BindSelf binds this process's owner socket in the calling thread's
// network namespace (the caller runs it inside the host's, in
// netns.Handle.Do); closing the descriptor ends the process's ownership
// there.
func BindSelf() (fd int, err error) { return bindAbstract(socketName(ID)) }

// Live reports which owners of ids are alive in host. This process and
// the persistent owner count as alive without a look, and so does an
// empty ID (a mark that could not be read is never taken for a dead
// owner's).
func Live(host *netns.Handle, ids []string) (map[string]bool, error) {
	live := map[string]bool{ID: true, PersistentID: true, "": true}
	var probe []string
	for _, id := range ids {
		if _, seen := live[id]; !seen {
			live[id] = false
			probe = append(probe, id)
		}
	}
	if len(probe) == 0 {
		return live, nil
	}
	err := nl.Do(host, func() error {
		for _, id := range probe {
			fd, err := bindAbstract(socketName(id))
			switch {
			case err == nil:
				unix.Close(fd) // nobody holds it: the owner is gone
			case errors.Is(err, unix.EADDRINUSE):
				live[id] = true
			default:
				return fmt.Errorf("probe owner %s: %w", id, err)
			}
		}
		return nil
	})
	return live, err
}

// lockName is the host lock's abstract name.
const lockName = "nsnet-lock"

// DefaultLockWait bounds WithHostLock's wait when ctx has no deadline
// (a variable for tests).
var DefaultLockWait = 10 * time.Second

// WithHostLock runs fn while holding the host lock (see the package doc).
// It waits for another holder, in this process or another, until ctx is
// done or its deadline passes (DefaultLockWait without one), backing off
// from 50 µs to 5 ms between tries. A wait that runs out returns an error
// matching context.DeadlineExceeded that names the holder where this
// process can see it.
func WithHostLock(ctx context.Context, host *netns.Handle, fn func() error) error {
	start := time.Now()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = start.Add(DefaultLockWait)
	}
	var fd int
	bind := func() error {
		var err error
		fd, err = bindAbstract(lockName)
		return err
	}
	for delay := 50 * time.Microsecond; ; delay = min(2*delay, 5*time.Millisecond) {
		err := host.Do(bind)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EADDRINUSE) {
			return fmt.Errorf("host lock: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("host lock, held by %s: %w", lockHolder(host), err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("host lock: held by %s for %v (another nsnet process, stuck?): %w",
				lockHolder(host), time.Since(start).Round(time.Millisecond), context.DeadlineExceeded)
		}
		time.Sleep(min(delay, left))
	}
	defer unix.Close(fd)
	return fn()
}

// lockHolder names the process holding the host lock: its socket's inode
// from the host's /proc/net/unix, then the process with a descriptor on it.
// Processes of other PID namespaces (or hidden by /proc's permissions)
// cannot be named.
func lockHolder(host *netns.Handle) string {
	var table []byte
	nl.Do(host, func() (err error) {
		table, err = os.ReadFile("/proc/thread-self/net/unix")
		return err
	})
	inode := ""
	for _, line := range strings.Split(string(table), "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && f[len(f)-1] == "@"+lockName {
			inode = f[6]
		}
	}
	if inode == "" {
		return "another process"
	}
	want := "socket:[" + inode + "]"
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil && target == want {
			pid := strings.Split(fd, "/")[2]
			comm, _ := os.ReadFile("/proc/" + pid + "/comm")
			return fmt.Sprintf("pid %s (%s)", pid, strings.TrimSpace(string(comm)))
		}
	}
	return "a process of another PID namespace"
}
