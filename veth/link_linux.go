package veth

import (
	"fmt"
	"net"
	"strings"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// Link is what "ip link show" tells about one link of any kind.
type Link struct {
	Index int    // interface index, unique within its namespace only
	Name  string // interface name
	Kind  string // "veth", "bridge", ...; "" for links without one (lo, most NICs)
	MTU   int
	// Flags are the kernel's IFF_* flags (net.FlagUp and friends for the
	// common ones; IFF_LOWER_UP is 1<<16).
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
func (l Link) Up() bool { return l.Flags&unix.IFF_UP != 0 }

func fromNL(m nl.Link) Link {
	a := m.Attributes
	l := Link{
		Index:        int(m.Index),
		Name:         a.Name,
		MTU:          int(a.MTU),
		Flags:        m.Flags,
		OperState:    operState(a.OperationalState),
		HardwareAddr: a.Address,
		Broadcast:    a.Broadcast,
		LinkType:     m.Type,
		PeerIndex:    int(a.Type),
		PeerNetNSID:  m.PeerNetNSID,
	}
	if a.Info != nil {
		l.Kind = a.Info.Kind
	}
	if a.Master != nil {
		l.MasterIndex = int(*a.Master)
	}
	if a.Alias != nil {
		l.Alias = *a.Alias
	}
	return l
}

func operState(s rtnetlink.OperationalState) string {
	switch s {
	case rtnetlink.OperStateNotPresent:
		return "NOTPRESENT"
	case rtnetlink.OperStateDown:
		return "DOWN"
	case rtnetlink.OperStateLowerLayerDown:
		return "LOWERLAYERDOWN"
	case rtnetlink.OperStateTesting:
		return "TESTING"
	case rtnetlink.OperStateDormant:
		return "DORMANT"
	case rtnetlink.OperStateUp:
		return "UP"
	}
	return "UNKNOWN"
}

var flagNames = []struct {
	bit  uint32
	name string
}{
	{unix.IFF_LOOPBACK, "LOOPBACK"}, {unix.IFF_BROADCAST, "BROADCAST"},
	{unix.IFF_POINTOPOINT, "POINTOPOINT"}, {unix.IFF_MULTICAST, "MULTICAST"},
	{unix.IFF_NOARP, "NOARP"}, {unix.IFF_ALLMULTI, "ALLMULTI"},
	{unix.IFF_PROMISC, "PROMISC"}, {unix.IFF_MASTER, "MASTER"},
	{unix.IFF_SLAVE, "SLAVE"}, {unix.IFF_DEBUG, "DEBUG"},
	{unix.IFF_DYNAMIC, "DYNAMIC"}, {unix.IFF_AUTOMEDIA, "AUTOMEDIA"},
	{unix.IFF_PORTSEL, "PORTSEL"}, {unix.IFF_NOTRAILERS, "NOTRAILERS"},
	{unix.IFF_UP, "UP"}, {unix.IFF_LOWER_UP, "LOWER_UP"}, {unix.IFF_DORMANT, "DORMANT"},
	{unix.IFF_ECHO, "ECHO"},
}

// String formats the link as "ip link show" does, on two lines:
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
	if l.Flags&unix.IFF_UP != 0 && l.Flags&unix.IFF_LOWER_UP == 0 {
		flags = append(flags, "NO-CARRIER")
	}
	fmt.Fprintf(&b, "%d: %s: <%s> mtu %d", l.Index, name, strings.Join(flags, ","), l.MTU)
	if l.MasterIndex != 0 {
		fmt.Fprintf(&b, " master if%d", l.MasterIndex)
	}
	fmt.Fprintf(&b, " state %s", l.OperState)
	kind := "ether"
	switch l.LinkType {
	case unix.ARPHRD_LOOPBACK:
		kind = "loopback"
	case unix.ARPHRD_ETHER:
	case unix.ARPHRD_NONE:
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

// Format formats links one after the other as "ip link show" does.
func Format(links []Link) string {
	var b strings.Builder
	for _, l := range links {
		b.WriteString(l.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func checkName(op, name string) error {
	if err := nl.CheckIfName(name); err != nil {
		return fmt.Errorf("veth: %s: %w", op, err)
	}
	return nil
}

// List returns every link of ns (nil: the current namespace), in index
// order: the "ip link show" equivalent.
func List(ns *netns.Handle) ([]Link, error) {
	c, err := nl.Dial(ns)
	if err != nil {
		return nil, fmt.Errorf("veth: list: %w", err)
	}
	defer c.Close()
	msgs, err := c.Query(nl.DumpLinks())
	if err != nil {
		return nil, fmt.Errorf("veth: list: %w", err)
	}
	links := make([]Link, 0, len(msgs))
	for _, m := range msgs {
		l, err := nl.DecodeLink(m.Data)
		if err != nil {
			return nil, fmt.Errorf("veth: list: %w", err)
		}
		links = append(links, fromNL(l))
	}
	return links, nil
}

// Lookup returns the link called name in ns, in one round trip (the kernel
// resolves the name). A missing link matches os.ErrNotExist.
func Lookup(ns *netns.Handle, name string) (Link, error) {
	if err := checkName("lookup", name); err != nil {
		return Link{}, err
	}
	c, err := nl.Dial(ns)
	if err != nil {
		return Link{}, fmt.Errorf("veth: lookup %q: %w", name, err)
	}
	defer c.Close()
	l, err := c.LinkByName(name)
	if err != nil {
		return Link{}, fmt.Errorf("veth: lookup %q: %w", name, err)
	}
	return fromNL(l), nil
}

// SetUp brings the link called name up ("ip link set dev NAME up").
func SetUp(ns *netns.Handle, name string) error { return setUp(ns, name, true) }

// SetDown brings the link called name down ("ip link set dev NAME down").
func SetDown(ns *netns.Handle, name string) error { return setUp(ns, name, false) }

func setUp(ns *netns.Handle, name string, up bool) error {
	op := "set up"
	if !up {
		op = "set down"
	}
	return exec(ns, op, name, nl.SetLinkUp(0, name, up))
}

// Delete deletes the link called name; for a veth, its peer goes too
// ("ip link del NAME"). It waits for the kernel, which for a veth means
// one RCU grace period (tens of milliseconds).
func Delete(ns *netns.Handle, name string) error {
	return exec(ns, "delete", name, nl.DeleteLink(0, name))
}

// Move moves the link called name from ns into the namespace to
// ("ip link set dev NAME netns TO"). The kernel brings the link down and
// removes its addresses on the way; its index may differ in to, so look it
// up by name there.
func Move(ns *netns.Handle, name string, to *netns.Handle) error {
	if to == nil {
		return fmt.Errorf("veth: move %q: target namespace is nil", name)
	}
	fd, err := to.FD()
	if err != nil {
		return fmt.Errorf("veth: move %q: %w", name, err)
	}
	return exec(ns, "move", name, nl.SetLink(&rtnetlink.LinkMessage{Attributes: &rtnetlink.LinkAttributes{
		Name: name, NetNS: rtnetlink.NetNSForFD(uint32(fd)),
	}}))
}

func exec(ns *netns.Handle, op, name string, r nl.Request) error {
	if err := checkName(op, name); err != nil {
		return err
	}
	c, err := nl.Dial(ns)
	if err != nil {
		return fmt.Errorf("veth: %s %q: %w", op, name, err)
	}
	defer c.Close()
	if err := c.Exec(r); err != nil {
		return fmt.Errorf("veth: %s %q: %w", op, name, err)
	}
	return nil
}
