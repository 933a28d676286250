package addr

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
)

// ifaFTentative is Linux's IFA_F_TENTATIVE.
const ifaFTentative = 0x40

// ErrInvalidName is matched by the error for a malformed link name; it is
// netns.ErrInvalidName (one value across nsnet).
var ErrInvalidName = nl.ErrInvalidName

// ErrInterrupted is matched by List's error when the addresses kept changing
// while they were read, through every read for two seconds (List reads
// again after growing pauses; a change during a read makes the read
// incomplete). It is one value in every package that returns it.
var ErrInterrupted = nl.ErrInterrupted

// ErrInvalidPrefix is matched by the error for an unusable address.
var ErrInvalidPrefix = nl.ErrInvalidPrefix

// ErrDADFailed is matched by WaitReady's error when duplicate address
// detection found the address in use on the link.
var ErrDADFailed = errors.New("duplicate address detected")

// Address is one address of a link, as "ip address show" lists it.
type Address struct {
	Prefix    netip.Prefix // the address and its prefix length
	LinkIndex int
	Broadcast netip.Addr // IPv4 only; invalid if none
	Scope     uint8      // RT_SCOPE_*: 0 global, 253 link, 254 host
	Flags     uint32     // IFA_F_*: permanent, tentative, nodad, ...
	Label     string     // IPv4 label, usually the link name
}

// Tentative reports whether the address is still in duplicate address
// detection (IPv6), and so not yet usable as a source.
func (a Address) Tentative() bool { return a.Flags&ifaFTentative != 0 }

// Config holds the options of an address; the zero value is what
// "ip address add" does.
type Config struct {
	// NoDAD skips IPv6 duplicate address detection ("nodad"), so the
	// address is usable at once. Ignored for IPv4.
	NoDAD bool
}

// Validate reports what makes p unusable as an interface address, or nil.
// The error matches ErrInvalidPrefix.
func Validate(p netip.Prefix) error {
	a := p.Addr()
	switch {
	case !p.IsValid():
		return fmt.Errorf("%w: %v: not a valid prefix", ErrInvalidPrefix, p)
	case a.Is4In6():
		return fmt.Errorf("%w: %v: IPv4-mapped IPv6 address, use the IPv4 form", ErrInvalidPrefix, p)
	case a.Zone() != "":
		return fmt.Errorf("%w: %v: has a zone", ErrInvalidPrefix, p)
	case a.IsUnspecified():
		return fmt.Errorf("%w: %v: unspecified address", ErrInvalidPrefix, p)
	case a.IsMulticast():
		return fmt.Errorf("%w: %v: multicast address", ErrInvalidPrefix, p)
	}
	return nil
}

// Add adds p to the link called link ("ip address add P dev LINK").
func Add(ns *netns.Handle, link string, p netip.Prefix) error {
	return nl.NeedPriv(sysAdd(ns, link, p), "CAP_NET_ADMIN in the namespace")
}

// Replace adds p to the link, or updates it if present
// ("ip address replace").
func Replace(ns *netns.Handle, link string, p netip.Prefix) error {
	return nl.NeedPriv(sysReplace(ns, link, p), "CAP_NET_ADMIN in the namespace")
}

// Add adds p to the link with c's options. An address already there
// matches os.ErrExist.
func (c Config) Add(ns *netns.Handle, link string, p netip.Prefix) error {
	return c.sysAdd(ns, link, p)
}

// Replace is Add that updates an existing address instead of failing.
func (c Config) Replace(ns *netns.Handle, link string, p netip.Prefix) error {
	return c.sysReplace(ns, link, p)
}

// Delete removes p from the link ("ip address del P dev LINK"). A missing
// address matches os.ErrNotExist.
func Delete(ns *netns.Handle, link string, p netip.Prefix) error {
	return nl.NeedPriv(sysDelete(ns, link, p), "CAP_NET_ADMIN in the namespace")
}

// List returns the addresses of the link called link in ns, or of every
// link if link is "" ("ip address show [dev LINK]"). For one link the
// kernel filters the dump itself.
func List(ns *netns.Handle, link string) ([]Address, error) {
	v, err := sysList(ns, link)
	return v, nl.NeedPriv(err, "CAP_NET_ADMIN in the namespace")
}

// WaitReady waits until p on the link has left the tentative state of
// IPv6 duplicate address detection, woken by the kernel's address
// notifications (no polling), until ctx is done.
// IPv4 addresses are ready at once. A failed detection matches
// ErrDADFailed; an address not on the link, os.ErrNotExist.
func WaitReady(ctx context.Context, ns *netns.Handle, link string, p netip.Prefix) error {
	return nl.NeedPriv(sysWaitReady(ctx, ns, link, p), "CAP_NET_ADMIN in the namespace")
}
