//go:build linux

package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/veth"
	"golang.org/x/sys/unix"
)

// A named namespace made by "nsnet run -name" outlives a run killed with
// SIGKILL (its name under /run/netns holds it), so it carries a mark, on
// its own lo's ifalias: "nsnet run owner=ID pid=P". While the run lives it
// holds a unix socket bound in the host namespace to the abstract name
// "@nsnet-run-ID"; the kernel frees the name when the process exits,
// however it exits, and in whatever PID namespace it ran. A namespace
// whose mark names a free socket is a dead run's: ls shows it, sweep and
// the next run delete it. Nothing is kept in files, so nothing can be
// stale.

// runNS is a named namespace with a run's mark.
type runNS struct {
	Name  string `json:"name"`
	Owner string `json:"owner"`
	PID   int    `json:"pid"`
	State string `json:"state"` // "alive" or "dead"
}

const runMarkPrefix = "nsnet run owner="

// claimOwner binds this run's owner socket in the host namespace (the
// calling thread's) and returns its ID; the descriptor stays open for
// the life of the process.
func claimOwner() (string, error) {
	b := make([]byte, 6)
	rand.Read(b)
	id := fmt.Sprintf("%x", b)
	fd, err := bindOwner(id)
	if err != nil {
		return "", fmt.Errorf("owner socket: %w", err)
	}
	_ = fd // held until exit: the kernel frees the name then
	return id, nil
}

func bindOwner(id string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: "@nsnet-run-" + id}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// alive reports whether the run of owner id still holds its socket.
func alive(id string) bool {
	fd, err := bindOwner(id)
	if err != nil {
		return errors.Is(err, unix.EADDRINUSE)
	}
	unix.Close(fd)
	return false
}

// markRun marks the new namespace ns as this run's.
func markRun(ns *netns.Handle, id string) error {
	c, err := nl.Dial(ns)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Exec(nl.SetAlias(1, fmt.Sprintf("%s%s pid=%d", runMarkPrefix, id, os.Getpid()))) // lo is 1 in a new namespace
}

// listRuns finds the named namespaces that carry a run's mark.
func listRuns() ([]runNS, error) {
	names, err := netns.List()
	if err != nil {
		return nil, err
	}
	var out []runNS
	for _, name := range names {
		r, ok := readMark(name)
		if !ok {
			continue
		}
		r.State = "dead"
		if alive(r.Owner) {
			r.State = "alive"
		}
		out = append(out, r)
	}
	return out, nil
}

func readMark(name string) (runNS, bool) {
	ns, err := netns.Open(name)
	if err != nil {
		return runNS{}, false
	}
	defer ns.Close()
	lo, err := veth.Lookup(ns, "lo")
	if err != nil {
		return runNS{}, false
	}
	rest, ok := strings.CutPrefix(lo.Alias, runMarkPrefix)
	if !ok {
		return runNS{}, false
	}
	r := runNS{Name: name}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return runNS{}, false
	}
	r.Owner = f[0]
	for _, kv := range f[1:] {
		if v, ok := strings.CutPrefix(kv, "pid="); ok {
			r.PID, _ = strconv.Atoi(v)
		}
	}
	return r, true
}

// sweepRuns deletes the named namespaces of dead runs, and returns their
// names.
func sweepRuns() ([]string, error) {
	runs, err := listRuns()
	if err != nil {
		return nil, err
	}
	var gone []string
	var errs []error
	for _, r := range runs {
		if r.State != "dead" {
			continue
		}
		if err := netns.Delete(r.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		gone = append(gone, r.Name)
	}
	return gone, errors.Join(errs...)
}
