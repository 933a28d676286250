package netns

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
)

// Handle owns one open network namespace file descriptor.
//
// A nil *Handle stands for the caller's current namespace wherever nsnet
// accepts one. Methods are safe for concurrent use, except that Close must not
// race with an operation that is using the handle.
type Handle struct {
	fd   *handleFD
	name string // name under Dir, "" if not known
	dev  uint64 // nsfs device and inode: the namespace's identity
	ino  uint64
}

// handleFD is a Handle's descriptor, apart from the Handle so that a
// cleanup attached to the Handle can close it: a Handle dropped without
// Close does not keep its namespace alive until the process exits.
type handleFD struct{ v atomic.Int64 } // -1 once closed

func (f *handleFD) close() error {
	fd := f.v.Swap(-1)
	if fd < 0 {
		return nil
	}
	return closeFD(int(fd))
}

// Fd returns the namespace's file descriptor, or -1 if h is nil or closed.
// The descriptor stays owned by h: do not close it, and keep h reachable
// (runtime.KeepAlive) while using it, as with os.File.Fd: a Handle that is
// no longer referenced is closed by a cleanup.
func (h *Handle) Fd() int {
	if h == nil || h.fd == nil {
		return -1
	}
	return int(h.fd.v.Load())
}

// Close closes the file descriptor. The namespace itself goes away only when
// nothing else (a bind mount, a process, a socket) refers to it. Close is
// idempotent; calling it on a nil handle does nothing.
func (h *Handle) Close() error {
	if h == nil {
		return nil
	}
	if h.fd == nil {
		return nil
	}
	if err := h.fd.close(); err != nil {
		return fmt.Errorf("netns: close %s: %w", h, err)
	}
	return nil
}

// Name returns the name the handle was created or opened with under [Dir],
// or "" for an anonymous namespace, a path or a process.
func (h *Handle) Name() string {
	if h == nil {
		return ""
	}
	return h.name
}

// String describes the handle as "NAME net:[INODE]" (the inode is what
// readlink /proc/PID/ns/net shows), or "current" for nil.
func (h *Handle) String() string {
	if h == nil {
		return "current"
	}
	if h.name == "" {
		return fmt.Sprintf("net:[%d]", h.ino)
	}
	return fmt.Sprintf("%s net:[%d]", h.name, h.ino)
}

// Equal reports whether h and o refer to the same namespace, by the nsfs
// device and inode that identify it. A nil handle stands for the calling
// thread's current namespace. Closed handles still compare by identity.
func (h *Handle) Equal(o *Handle) bool {
	a, erra := h.identity()
	b, errb := o.identity()
	return erra == nil && errb == nil && a == b
}

// ID returns the namespace's inode number, the number in "net:[N]": equal
// IDs mean the same namespace while both are alive. A nil handle gives the
// calling thread's current namespace's ID, or 0 if it cannot be read.
func (h *Handle) ID() uint64 {
	id, _ := h.identity()
	return id.ino
}

type nsID struct{ dev, ino uint64 }

func (h *Handle) identity() (nsID, error) {
	if h != nil {
		return nsID{h.dev, h.ino}, nil
	}
	return currentIdentity()
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// needPriv adds to a permission error what was missing (see nl.NeedPriv,
// which this package cannot import).
func needPriv(err error) error {
	if err == nil || !errors.Is(err, os.ErrPermission) || strings.Contains(err.Error(), "(needs CAP_") {
		return err
	}
	return &privError{err}
}

type privError struct{ err error }

func (e *privError) Error() string {
	return e.err.Error() + " (needs CAP_SYS_ADMIN: run as root, or grant the capability)"
}

func (e *privError) Unwrap() error { return e.err }
