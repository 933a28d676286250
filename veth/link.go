package veth

import (
	"fmt"
	"net"
	"strings"
)

// Flags are a link's IFF_* flags, as the kernel reports them (see
// linux/if.h). They are not net.Flags, whose bits differ (net.FlagLoopback
// is 4, IFF_LOOPBACK 8): use these constants. String gives ip's names.
type Flags uint32

// The flags of Linux's linux/if.h, numbered here so that Link builds on
// every system (a test checks them against golang.org/x/sys/unix).
const (
	FlagUp           Flags = 0x1
	FlagBroadcast    Flags = 0x2
	FlagDebug        Flags = 0x4
	FlagLoopback     Flags = 0x8
	FlagPointToPoint Flags = 0x10
	FlagNoTrailers   Flags = 0x20
	FlagNoARP        Flags = 0x80
	FlagPromisc      Flags = 0x100
	FlagAllMulti     Flags = 0x200
	FlagMaster       Flags = 0x400
	FlagSlave        Flags = 0x800
	FlagMulticast    Flags = 0x1000
	FlagPortSel      Flags = 0x2000
	FlagAutoMedia    Flags = 0x4000
	FlagDynamic      Flags = 0x8000
	FlagLowerUp      Flags = 0x10000
	FlagDormant      Flags = 0x20000
	FlagEcho         Flags = 0x40000
)

// ARPHRD_* link types.
const (
	arphrdEther    = 1
	arphrdLoopback = 772
	arphrdNone     = 0xfffe
)

// Link is what "ip link show" tells about one link of any kind.
type Link struct {
	Index        int    // interface index, unique within its namespace only
	Name         string // interface name
	Kind         string // "veth", "bridge", ...; "" for links without one (lo, most NICs)
	MTU          int
	Flags        Flags  // IFF_* flags: FlagUp, FlagLoopback, FlagLowerUp...
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
func (l Link) Up() bool { return l.Flags&FlagUp != 0 }

var flagNames = []struct {
	bit  Flags
	name string
}{
	{FlagLoopback, "LOOPBACK"}, {FlagBroadcast, "BROADCAST"},
	{FlagPointToPoint, "POINTOPOINT"}, {FlagMulticast, "MULTICAST"},
	{FlagNoARP, "NOARP"}, {FlagAllMulti, "ALLMULTI"},
	{FlagPromisc, "PROMISC"}, {FlagMaster, "MASTER"},
	{FlagSlave, "SLAVE"}, {FlagDebug, "DEBUG"},
	{FlagDynamic, "DYNAMIC"}, {FlagAutoMedia, "AUTOMEDIA"},
	{FlagPortSel, "PORTSEL"}, {FlagNoTrailers, "NOTRAILERS"},
	{FlagUp, "UP"}, {FlagLowerUp, "LOWER_UP"}, {FlagDormant, "DORMANT"},
	{FlagEcho, "ECHO"},
}

// String names the flags as ip does, comma-separated in ip's order
// ("BROADCAST,MULTICAST,UP,LOWER_UP").
func (f Flags) String() string {
	var names []string
	for _, n := range flagNames {
		if f&n.bit != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
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
	flags := l.Flags.String()
	if l.Flags&FlagUp != 0 && l.Flags&FlagLowerUp == 0 {
		flags = strings.TrimPrefix(flags+",NO-CARRIER", ",")
	}
	fmt.Fprintf(&b, "%d: %s: <%s> mtu %d", l.Index, name, flags, l.MTU)
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
