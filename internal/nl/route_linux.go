package nl

import (
	"net"
	"net/netip"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// RouteSpec is a route in the kernel's terms, indexes resolved.
type RouteSpec struct {
	Dst       netip.Prefix
	Gateway   netip.Addr
	LinkIndex int
	Src       netip.Addr
	Metric    int
	Table     int // 0: main
	Scope     uint8
	Protocol  uint8
	Type      uint8
	NextHops  []NextHopSpec // a multipath route's next hops (RTA_MULTIPATH)
}

// NextHopSpec is one next hop of a multipath route.
type NextHopSpec struct {
	Gateway   netip.Addr
	LinkIndex int
	Weight    int // 1..256
}

// RouteMessage marshals r; the defaults are those of "ip route add".
func RouteMessage(r RouteSpec) []byte {
	table := r.Table
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	m := &rtnetlink.RouteMessage{
		Family:    Family(r.Dst.Addr()),
		DstLength: uint8(r.Dst.Bits()),
		Protocol:  r.Protocol,
		Scope:     r.Scope,
		Type:      r.Type,
		Attributes: rtnetlink.RouteAttributes{
			OutIface: uint32(r.LinkIndex),
			Priority: uint32(r.Metric),
			Table:    uint32(table),
		},
	}
	if table < 256 {
		m.Table = uint8(table)
	}
	if r.Dst.Bits() > 0 {
		m.Attributes.Dst = net.IP(r.Dst.Addr().AsSlice())
	}
	if r.Gateway.IsValid() {
		m.Attributes.Gateway = net.IP(r.Gateway.AsSlice())
	}
	if r.Src.IsValid() {
		m.Attributes.Src = net.IP(r.Src.AsSlice())
	}
	for _, h := range r.NextHops {
		nh := rtnetlink.NextHop{Hop: rtnetlink.RTNextHop{IfIndex: uint32(h.LinkIndex), Hops: uint8(max(h.Weight, 1) - 1)}}
		if h.Gateway.IsValid() {
			nh.Gateway = net.IP(h.Gateway.AsSlice())
		}
		m.Attributes.Multipath = append(m.Attributes.Multipath, nh)
	}
	b, err := m.MarshalBinary()
	if err != nil {
		panic("nl: marshal route message: " + err.Error()) // cannot fail: plain attributes
	}
	return b
}

// NewRoute adds r (or with replace, replaces it).
func NewRoute(r RouteSpec, replace bool) Request {
	f := netlink.Create | netlink.Excl
	if replace {
		f = netlink.Create | netlink.Replace
	}
	return Request{Type: unix.RTM_NEWROUTE, Flags: f, Data: RouteMessage(r)}
}

// DelRoute deletes r.
func DelRoute(r RouteSpec) Request {
	return Request{Type: unix.RTM_DELROUTE, Data: RouteMessage(r)}
}

// DumpRoutes dumps the routes of family (0: both) in table (0: every
// table); with strict checking the kernel filters by table itself.
func DumpRoutes(family uint8, table int) Request {
	m := &rtnetlink.RouteMessage{Family: family}
	if table != 0 {
		m.Attributes.Table = uint32(table)
		if table < 256 {
			m.Table = uint8(table)
		}
	}
	b, _ := m.MarshalBinary()
	return Request{Type: unix.RTM_GETROUTE, Flags: netlink.Dump, Data: b}
}

// GetRoute asks which route the kernel would use to reach dst.
func GetRoute(dst netip.Addr) Request {
	m := &rtnetlink.RouteMessage{
		Family:     Family(dst),
		DstLength:  uint8(dst.BitLen()),
		Attributes: rtnetlink.RouteAttributes{Dst: net.IP(dst.AsSlice())},
	}
	b, _ := m.MarshalBinary()
	return Request{Type: unix.RTM_GETROUTE, Data: b}
}

// DecodeRoute decodes an RTM_NEWROUTE body.
func DecodeRoute(b []byte) (RouteSpec, error) {
	var m rtnetlink.RouteMessage
	if err := m.UnmarshalBinary(b); err != nil {
		return RouteSpec{}, err
	}
	a := m.Attributes
	r := RouteSpec{
		LinkIndex: int(a.OutIface),
		Metric:    int(a.Priority),
		Table:     int(m.Table),
		Scope:     m.Scope,
		Protocol:  m.Protocol,
		Type:      m.Type,
	}
	if a.Table != 0 {
		r.Table = int(a.Table)
	}
	dst := netip.IPv4Unspecified()
	if m.Family == unix.AF_INET6 {
		dst = netip.IPv6Unspecified()
	}
	if a.Dst != nil {
		dst = IPToAddr(a.Dst)
	}
	r.Dst = netip.PrefixFrom(dst, int(m.DstLength))
	if a.Gateway != nil {
		r.Gateway = IPToAddr(a.Gateway)
	}
	if a.Src != nil {
		r.Src = IPToAddr(a.Src)
	}
	for _, nh := range a.Multipath {
		h := NextHopSpec{LinkIndex: int(nh.Hop.IfIndex), Weight: int(nh.Hop.Hops) + 1}
		if nh.Gateway != nil {
			h.Gateway = IPToAddr(nh.Gateway)
		}
		r.NextHops = append(r.NextHops, h)
	}
	return r, nil
}
