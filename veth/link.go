package veth

import (
	"fmt"
	"net"
	"strings"
)

// Linux's IFF_* link flags and ARPHRD_* link types, numbered here so that
// Link and its formatting build on every system.
const (
	iffUp           = 0x1
	iffBroadcast    = 0x2
	iffDebug        = 0x4
	iffLoopback     = 0x8
	iffPointToPoint = 0x10
	iffNoTrailers   = 0x20
	iffNoARP        = 0x80
	iffPromisc      = 0x100
	iffAllMulti     = 0x200
	iffMaster       = 0x400
	iffSlave        = 0x800
	iffMulticast    = 0x1000
	iffPortSel      = 0x2000
	iffAutoMedia    = 0x4000
	iffDynamic      = 0x8000
	iffLowerUp      = 0x10000
	iffDormant      = 0x20000
	iffEcho         = 0x40000

	arphrdEther    = 1
	arphrdLoopback = 772
	arphrdNone     = 0xfffe
)

// Link is what "ip link show" tells about one link of any kind.
type Link struct {
	Index int    // interface index, unique within its namespace only
	Name  string // interface name
	Kind  string // "veth", "bridge", ...; "" for links without one (lo, most NICs)
	MTU   int
	// Flags are the kernel's IFF_* flags (unix.IFF_UP, IFF_LOOPBACK,
	// IFF_MULTICAST, IFF_LOWER_UP...). They are not net.Flags: only
	// net.FlagUp and net.FlagBroadcast have the same values.
	Flags        uint32
	OperState    string // "UP", "DOWN", "UNKNOWN", "LOWERLAYERDOWN", ...
	HardwareAddr net.HardwareAddr
	Broadcast    net.HardwareAddr
	LinkType     uint16 // ARPHRD_*: 1 Ethernet, 772 loopback
	// PeerIndex is, for a veth, the peer's interface index in the peer's
	// namespace (IFLA_LINK); 0 if none.
	PeerIndex int
	// PeerNetNSID is, for a veth whose peer is in another namespace, that
	// namespace's id as seen from this one (IFLA_LINK_NETNSID); -1 if the
	// peer is in the same namespace or there is no peer.
	PeerNetNSID int
	MasterIndex int    // bridge or bond the link is enslaved to; 0 if none
	Alias       string // ifalias, "" if unset
}

// Up reports whether the link is administratively up (IFF_UP).
func (l Link) Up() bool { return l.Flags&iffUp != 0 }

var flagNames = []struct {
	bit  uint32
	name string
}{
	{iffLoopback, "LOOPBACK"}, {iffBroadcast, "BROADCAST"},
	{iffPointToPoint, "POINTOPOINT"}, {iffMulticast, "MULTICAST"},
	{iffNoARP, "NOARP"}, {iffAllMulti, "ALLMULTI"},
	{iffPromisc, "PROMISC"}, {iffMaster, "MASTER"},
	{iffSlave, "SLAVE"}, {iffDebug, "DEBUG"},
	{iffDynamic, "DYNAMIC"}, {iffAutoMedia, "AUTOMEDIA"},
	{iffPortSel, "PORTSEL"}, {iffNoTrailers, "NOTRAILERS"},
	{iffUp, "UP"}, {iffLowerUp, "LOWER_UP"}, {iffDormant, "DORMANT"},
	{iffEcho, "ECHO"},
}

// String formats the link in the style of "ip link show", on two lines
// (for people, not for parsing: it does not match ip's output in every
// detail, such as the placement of NO-CARRIER or M-DOWN):
//
//	5: veth0@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 state UP
//	    link/ether 2a:7d:... brd ff:ff:ff:ff:ff:ff link-netnsid 0
func (l Link) String() string {
	var b strings.Builder
	name := l.Name
	if l.PeerIndex != 0 && (l.PeerIndex != l.Index || l.PeerNetNSID >= 0) {
		name += fmt.Sprintf("@if%d", l.PeerIndex)
	}
	var flags []string
	for _, f := range flagNames {
		if l.Flags&f.bit != 0 {
			flags = append(flags, f.name)
		}
	}
	if l.Flags&iffUp != 0 && l.Flags&iffLowerUp == 0 {
		flags = append(flags, "NO-CARRIER")
	}
	fmt.Fprintf(&b, "%d: %s: <%s> mtu %d", l.Index, name, strings.Join(flags, ","), l.MTU)
	if l.MasterIndex != 0 {
		fmt.Fprintf(&b, " master if%d", l.MasterIndex)
	}
	fmt.Fprintf(&b, " state %s", l.OperState)
	kind := "ether"
	switch l.LinkType {
	case arphrdLoopback:
		kind = "loopback"
	case arphrdEther:
	case arphrdNone:
		kind = "none"
	default:
		kind = fmt.Sprint(l.LinkType)
	}
	fmt.Fprintf(&b, "\n    link/%s", kind)
	if len(l.HardwareAddr) > 0 {
		fmt.Fprintf(&b, " %s", l.HardwareAddr)
	}
	if len(l.Broadcast) > 0 {
		fmt.Fprintf(&b, " brd %s", l.Broadcast)
	}
	if l.PeerNetNSID >= 0 {
		fmt.Fprintf(&b, " link-netnsid %d", l.PeerNetNSID)
	}
	if l.Kind != "" {
		fmt.Fprintf(&b, " (%s)", l.Kind)
	}
	if l.Alias != "" {
		fmt.Fprintf(&b, "\n    alias %s", l.Alias)
	}
	return b.String()
}

// Format formats links one after the other, in the style of
// "ip link show" (see Link.String).
func Format(links []Link) string {
	var b strings.Builder
	for _, l := range links {
		b.WriteString(l.String())
		b.WriteByte('\n')
	}
	return b.String()
}
