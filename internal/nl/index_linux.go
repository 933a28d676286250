package nl

import (
	"crypto/rand"
	"encoding/binary"
	"os"

	"github.com/nsnet/nsnet/netns"
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
// another chosen one (EBUSY) is retried.
func RandomIndex() int {
	var b [4]byte
	rand.Read(b[:])
	return 1<<29 + int(binary.NativeEndian.Uint32(b[:])&(1<<29-1))
}
