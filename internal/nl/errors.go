package nl

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"unicode"

	"github.com/nsnet/nsnet/netns"
)

// ErrInvalidName is matched by the error for a malformed interface name:
// netns.ErrInvalidName, one value for namespace and interface names.
var ErrInvalidName = netns.ErrInvalidName

// MaxIfNameLen is IFNAMSIZ-1: the kernel refuses longer names with ERANGE.
const MaxIfNameLen = 15

// CheckIfName reports what is wrong with an interface name, before the kernel
// sees it, with the rules of the kernel's dev_valid_name.
func CheckIfName(name string) error {
	var why string
	switch {
	case name == "":
		why = "empty"
	case len(name) > MaxIfNameLen:
		why = fmt.Sprintf("%d bytes, more than %d", len(name), MaxIfNameLen)
	case name == "." || name == "..":
		why = "is . or .."
	case strings.ContainsAny(name, "/:%"):
		why = "contains /, : or % (the kernel reads % as a template: w%d becomes w0)"
	case strings.IndexFunc(name, badNameByte) >= 0 || strings.IndexByte(name, 0xA0) >= 0:
		// The kernel's isspace also counts the byte 0xA0 (Latin-1 no-break
		// space), alone or inside a UTF-8 sequence.
		why = "contains a control character, white space or the byte 0xA0 (white space to the kernel)"
	default:
		return nil
	}
	return fmt.Errorf("%w: interface %q: %s", ErrInvalidName, name, why)
}

// badNameByte is a rune that has no place in an interface or namespace
// name: white space (which the kernel refuses) and control characters
// (which it accepts, garbling every listing).
func badNameByte(r rune) bool {
	return r <= ' ' || r == 0x7f || (r >= 0x80 && r <= 0x9f) || unicode.IsSpace(r)
}

// kernelError keeps the *netlink.OpError → syscall.Errno chain and adds the
// mapping callers expect from a link, address or route that is not there:
// ENODEV (no such link), EADDRNOTAVAIL (no such address) and ESRCH (no such
// route) match os.ErrNotExist as ENOENT does.
type kernelError struct{ err error }

func (e *kernelError) Error() string { return e.err.Error() }
func (e *kernelError) Unwrap() error { return e.err }

func (e *kernelError) Is(target error) bool {
	if target != os.ErrNotExist {
		return false
	}
	var errno syscall.Errno
	if !errors.As(e.err, &errno) {
		return false
	}
	switch errno {
	case syscall.ENODEV, syscall.EADDRNOTAVAIL, syscall.ESRCH, syscall.ENOENT:
		return true
	}
	return false
}

// Wrap gives a kernel error the os.ErrNotExist mapping; nil stays nil.
func Wrap(err error) error {
	if err == nil {
		return nil
	}
	var ke *kernelError
	if errors.As(err, &ke) {
		return err
	}
	return &kernelError{err}
}

// ErrInvalidPrefix is matched by the error for an address or prefix that
// cannot be used.
var ErrInvalidPrefix = errors.New("invalid prefix")

// ErrInterrupted is matched by the error for a listing that concurrent
// changes kept from being read consistently: the caller may try again.
var ErrInterrupted = errors.New("listing interrupted by concurrent changes; try again")

// NeedPriv adds to a permission error (EPERM, EACCES: it matches
// os.ErrPermission, and still does) the privilege that was missing, what:
// "CAP_NET_ADMIN", for example. Other errors, and nil, are returned as
// they are; an error that says it already is too.
func NeedPriv(err error, what string) error {
	if err == nil || !errors.Is(err, os.ErrPermission) || strings.Contains(err.Error(), "(needs CAP_") {
		return err
	}
	return &privError{err, what}
}

type privError struct {
	err  error
	what string
}

func (e *privError) Error() string {
	return e.err.Error() + " (needs " + e.what + ": run as root, or grant the capability)"
}

func (e *privError) Unwrap() error { return e.err }

// ErrNoForceForwarding is matched by the error for IPv6 forwarding on a
// kernel (before Linux 6.17) or a /proc/sys without
// net.ipv6.conf.IF.force_forwarding (nat.ErrNoIPv6Forwarding is it).
var ErrNoForceForwarding = errors.New("no per-interface IPv6 forwarding")
