package addrplan

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// HostLinkLocal is the host end's IPv6 link-local address, fe80::INDEX:
// the host solicits a neighbour from its link-local address, so without
// one it could not reach a namespace that had not spoken first. It is
// added without the fe80::/64 route (which every link would share: one
// list in the kernel, longer with every link) and unique to the link, so
// that its local route is too.
func HostLinkLocal(index int) netip.Prefix {
	b := [16]byte{0: 0xfe, 1: 0x80}
	binary.BigEndian.PutUint32(b[12:], uint32(index))
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// Unspecified is the family's unspecified address (the default route's).
func Unspecified(fam byte) netip.Addr {
	if fam == unix.NFPROTO_IPV6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}
