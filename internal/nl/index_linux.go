package nl

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"os"

	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// DisableIPv6 turns IPv6 off on the host end of a new IPv4-only pair while
// it is still down. The kernel keeps the IPv6
// routes of every link (fe80::/64, ff00::/8) in one list per prefix, so
// with IPv6 on, each Connect cost more the more links the host had (see
// the README's benchmarks). disable_ipv6 has no netlink attribute, so it is
// written under /proc/sys, which follows the writing thread's namespace.
// Where /proc/sys is read-only (as in many containers) the write fails and
// is let go: nl.NoLinkLocal, sent with the link's up, still keeps the
// link-local address and its route away.
func DisableIPv6(host *netns.Handle, link string) {
	Do(host, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/"+link+"/disable_ipv6", []byte("1\n"), 0)
	})
}

// RandomIndex picks an interface index for a new link from the top of the
// range, [2^29, 2^30): the kernel hands out indexes counting up from 1, so
// these are never taken by links it numbers itself, and a collision with
// another chosen one is tried again (see IndexTaken).
func RandomIndex() int { return indexSource() }

// indexSource is RandomIndex's source (see SetIndexSource).
var indexSource = func() int {
	var b [4]byte
	rand.Read(b[:])
	return 1<<29 + int(binary.NativeEndian.Uint32(b[:])&(1<<29-1))
}

// SetIndexSource makes RandomIndex return f's indexes until restore is
// called, for tests that make a chosen index collide. Not for concurrent
// use with RandomIndex.
func SetIndexSource(f func() int) (restore func()) {
	old := indexSource
	indexSource = f
	return func() { indexSource = old }
}

// IndexTaken tells whether err, the answer to creating a link called name
// with indexes of RandomIndex's, means that an index was taken, not the
// name: worth trying again with others. The kernel answers EBUSY for a
// peer's index taken in its namespace, but EEXIST for the new link's own,
// as for a taken name (it reads a request with an index as one to change
// that link, which NLM_F_EXCL forbids); then the name, looked up, is free.
// With 10,000 links of such indexes in a namespace, one creation in 50,000
// collides.
func IndexTaken(c *Conn, err error, name string) bool {
	if errors.Is(err, unix.EBUSY) {
		return true
	}
	if !errors.Is(err, unix.EEXIST) {
		return false
	}
	_, qerr := c.Query(GetLinkByName(name))
	return errors.Is(qerr, unix.ENODEV)
}
