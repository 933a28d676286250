package veth

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
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
	FlagRunning      Flags = 0x40 // carrier and operational (ip prints NO-CARRIER for UP without it)
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

	// PeerName and PeerFlags are the peer's name and flags when it is in
	// the same namespace ("" and 0 otherwise), and MasterName the master's
	// name: what ip prints for them ("veth0@veth1", M-DOWN, "master br0").
	PeerName   string
	PeerFlags  Flags
	MasterName string
	// PeerNetNSName names the namespace of a peer in another namespace
	// when it is a named one (under netns.Dir), as ip prints it
	// ("link-netns NAME"); "" otherwise.
	PeerNetNSName string
	Qdisc         string // queueing discipline ("noqueue", "noop", ...)
	LinkMode      uint8  // IFLA_LINKMODE: 0 default, 1 dormant
	Group         uint32 // device group (0: "default")
	TxQueueLen    int    // transmit queue length ("qlen")
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
// ("BROADCAST,MULTICAST,UP,LOWER_UP"); RUNNING is not named (ip shows its
// absence as NO-CARRIER), other bits without a name follow in hex.
func (f Flags) String() string {
	var names []string
	for _, n := range flagNames {
		if f&n.bit != 0 {
			names = append(names, n.name)
			f &^= n.bit
		}
	}
	if f &^= FlagRunning; f != 0 {
		names = append(names, fmt.Sprintf("%x", uint32(f)))
	}
	return strings.Join(names, ",")
}

// String formats the link as "ip link show" does (iproute2 6.x): its first
// line exactly (a test compares them), then the link/ line and the alias:
//
//	5: veth0@veth1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000
//	    link/ether 2a:7d:... brd ff:ff:ff:ff:ff:ff
//
// A peer in another namespace is named by its index there ("@if4", and
// on the second line "link-netns NAME" for a named namespace, else
// "link-netnsid 0"), as ip does. Not shown: alternative
// names, and "@NONE" for a tunnel without a lower link.
func (l Link) String() string {
	var b strings.Builder
	name := l.Name
	mdown := false
	switch {
	case l.PeerIndex == 0: // (the kernel omits a link that is the link itself)
	case l.PeerNetNSID >= 0:
		name += fmt.Sprintf("@if%d", l.PeerIndex)
	case l.PeerName != "":
		name += "@" + l.PeerName
		mdown = l.PeerFlags&FlagUp == 0
	default:
		name += fmt.Sprintf("@if%d", l.PeerIndex)
	}
	var flags []string
	if l.Flags&FlagUp != 0 && l.Flags&FlagRunning == 0 {
		flags = append(flags, "NO-CARRIER")
	}
	if f := l.Flags.String(); f != "" {
		flags = append(flags, f)
	}
	if mdown {
		flags = append(flags, "M-DOWN")
	}
	fmt.Fprintf(&b, "%d: %s: <%s> mtu %d ", l.Index, name, strings.Join(flags, ","), l.MTU)
	if l.Qdisc != "" {
		fmt.Fprintf(&b, "qdisc %s ", l.Qdisc)
	}
	switch {
	case l.MasterName != "":
		fmt.Fprintf(&b, "master %s ", l.MasterName)
	case l.MasterIndex != 0:
		fmt.Fprintf(&b, "master if%d ", l.MasterIndex)
	}
	mode := fmt.Sprint(l.LinkMode)
	if int(l.LinkMode) < len(linkModes) {
		mode = linkModes[l.LinkMode]
	}
	fmt.Fprintf(&b, "state %s mode %s group %s ", l.OperState, mode, groupName(l.Group))
	if l.TxQueueLen > 0 {
		fmt.Fprintf(&b, "qlen %d", l.TxQueueLen)
	}
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
	switch {
	case l.PeerNetNSName != "":
		fmt.Fprintf(&b, " link-netns %s", l.PeerNetNSName)
	case l.PeerNetNSID >= 0:
		fmt.Fprintf(&b, " link-netnsid %d", l.PeerNetNSID)
	}
	if l.Alias != "" {
		fmt.Fprintf(&b, "\n    alias %s", l.Alias)
	}
	return b.String()
}

// linkModes are IFLA_LINKMODE's names, as ip prints them.
var linkModes = []string{"DEFAULT", "DORMANT", "TESTING"}

var groups struct {
	once  sync.Once
	names map[uint32]string
}

// groupName is the name of device group g as ip prints it: from
// /etc/iproute2/group (or /usr/share/iproute2/group, where newer iproute2
// installs it), "default" for 0, else the number.
func groupName(g uint32) string {
	groups.once.Do(func() {
		groups.names = map[uint32]string{0: "default"}
		for _, path := range []string{"/usr/share/iproute2/group", "/etc/iproute2/group"} {
			data, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(data), "\n") {
				f := strings.Fields(line)
				if len(f) < 2 || strings.HasPrefix(f[0], "#") {
					continue
				}
				if n, err := strconv.ParseUint(f[0], 0, 32); err == nil {
					groups.names[uint32(n)] = f[1]
				}
			}
		}
	})
	if n, ok := groups.names[g]; ok {
		return n
	}
	return fmt.Sprint(g)
}

// Format formats links one after the other, as "ip link show" does (see
// Link.String).
func Format(links []Link) string {
	var b strings.Builder
	for _, l := range links {
		b.WriteString(l.String())
		b.WriteByte('\n')
	}
	return b.String()
}
