package nl

import (
	"net"
	"net/netip"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Family returns AF_INET or AF_INET6 for a.
func Family(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// Broadcast returns the IPv4 broadcast address "ip address add ... brd +"
// gives a prefix (the last address; none for /31 and /32, RFC 3021).
func Broadcast(p netip.Prefix) netip.Addr {
	if !p.Addr().Is4() || p.Bits() >= 31 {
		return netip.Addr{}
	}
	b := p.Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}

// AddrMessage is the RTM_NEWADDR/RTM_DELADDR body for p on link index.
func AddrMessage(index int, p netip.Prefix, flags uint32) []byte {
	a := net.IP(p.Addr().AsSlice())
	m := &rtnetlink.AddressMessage{
		Family:       Family(p.Addr()),
		PrefixLength: uint8(p.Bits()),
		Index:        uint32(index),
		Scope:        unix.RT_SCOPE_UNIVERSE,
		Attributes:   &rtnetlink.AddressAttributes{Address: a, Local: a, Flags: flags},
	}
	if p.Addr().IsLoopback() {
		m.Scope = unix.RT_SCOPE_HOST
	}
	if brd := Broadcast(p); brd.IsValid() {
		m.Attributes.Broadcast = net.IP(brd.AsSlice())
	}
	b, err := m.MarshalBinary()
	if err != nil {
		panic("nl: marshal address message: " + err.Error()) // cannot fail: plain attributes
	}
	return b
}

// PeerAddrMessage is the RTM_NEWADDR/RTM_DELADDR body for the
// point-to-point address local (a single address, /32 or /128) on link
// index, whose other end is peer: as "ip address add LOCAL peer PEER", it
// comes with a route to peer through the link.
func PeerAddrMessage(index int, local, peer netip.Addr, flags uint32) []byte {
	m := &rtnetlink.AddressMessage{
		Family:       Family(local),
		PrefixLength: uint8(local.BitLen()),
		Index:        uint32(index),
		Scope:        unix.RT_SCOPE_UNIVERSE,
		Attributes:   &rtnetlink.AddressAttributes{Address: net.IP(peer.AsSlice()), Local: net.IP(local.AsSlice()), Flags: flags},
	}
	b, err := m.MarshalBinary()
	if err != nil {
		panic("nl: marshal address message: " + err.Error()) // cannot fail: plain attributes
	}
	return b
}

// NewPeerAddr adds the point-to-point address local, peer peer, on link
// index (see PeerAddrMessage).
func NewPeerAddr(index int, local, peer netip.Addr, flags uint32) Request {
	return Request{Type: unix.RTM_NEWADDR, Flags: netlink.Create | netlink.Excl, Data: PeerAddrMessage(index, local, peer, flags)}
}

// DelPeerAddr deletes the point-to-point address local, peer peer, from
// link index.
func DelPeerAddr(index int, local, peer netip.Addr) Request {
	return Request{Type: unix.RTM_DELADDR, Data: PeerAddrMessage(index, local, peer, 0)}
}

// NewAddr adds (or with replace, replaces) p on link index.
func NewAddr(index int, p netip.Prefix, flags uint32, replace bool) Request {
	f := netlink.Create | netlink.Excl
	if replace {
		f = netlink.Create | netlink.Replace
	}
	return Request{Type: unix.RTM_NEWADDR, Flags: f, Data: AddrMessage(index, p, flags)}
}

// DelAddr deletes p from link index.
func DelAddr(index int, p netip.Prefix) Request {
	return Request{Type: unix.RTM_DELADDR, Data: AddrMessage(index, p, 0)}
}

// DumpAddrs dumps the addresses of family (0: all) on link index (0: all
// links); with strict checking the kernel filters by index itself.
func DumpAddrs(family uint8, index int) Request {
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0] = family
	NativeEndian.PutUint32(b[4:], uint32(index))
	return Request{Type: unix.RTM_GETADDR, Flags: netlink.Dump, Data: b}
}

// IPToAddr converts a decoded net.IP to netip.Addr, unmapping IPv4.
func IPToAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
