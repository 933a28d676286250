package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
)

// ErrInvalidConfig is nat.ErrInvalidConfig: bad input, refused before
// anything changed.
var ErrInvalidConfig = nat.ErrInvalidConfig

// ErrStaleTable is returned by Create when nat's nftables table, shared
// by every nsnet process of the host, was made by an older nsnet without
// the rules networks need (it is replaced once the last process using it
// closes its links).
var ErrStaleTable = errors.New("the nftables table inet nsnet was made by an older nsnet, without the rules networks need")

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
}

const privileges = "CAP_NET_ADMIN in the host namespace, and CAP_SYS_ADMIN to enter namespaces"

// Config describes a network. The zero Config is not one: give at least
// Prefix or Prefix6.
type Config struct {
	// HostNS is the host namespace, where the bridge and the uplink are
	// (nil: the current namespace).
	HostNS *netns.Handle
	// Uplink is the host link the members' traffic leaves by, masqueraded
	// ("": the link of the default route).
	Uplink string
	// Prefix and Prefix6 are the network's subnets (one of them, or
	// both). The bridge takes each one's first host address, the members'
	// gateway; members get the next free ones. An IPv4 prefix needs room
	// for the gateway and one member (/30 or larger); an IPv6 one is /64
	// to /120.
	Prefix, Prefix6 netip.Prefix
	// Bridge names the bridge ("": "nsb-" and 11 random characters).
	Bridge string
	// NoDNS leaves the members' name resolution alone: no name server on
	// the gateway, no resolv.conf written. By default members resolve each
	// other's names (MemberConfig.Name, Aliases) through a name server of
	// the network's on its gateway addresses, which passes other names to
	// the host's own resolver.
	NoDNS bool
}

// Network is a subnet on a bridge in the host, owned by nsnet, whose
// members (namespaces, see Attach) reach each other directly, by name,
// and the outside through the uplink, masqueraded, as Links do. Its fields
// say what Create made, for reading.
type Network struct {
	Bridge            string       // the bridge's name at Create
	Uplink            string       // the uplink's name at Create
	Prefix, Prefix6   netip.Prefix // the subnets (zero: none of that family)
	Gateway, Gateway6 netip.Addr   // the bridge's addresses, the members' gateway and name server

	*state // the library's record (nil in a Network not made by Create)
}

// MemberConfig describes a member: its names and its end of the link.
type MemberConfig struct {
	// Name is the member's name on the network, which the other members
	// resolve to its addresses ("": none). A DNS label: letters, digits
	// and hyphens, at most 63, not starting or ending with a hyphen; names
	// are not case sensitive. Aliases are more names of the member. A name
	// taken on the network is refused (os.ErrExist).
	Name    string
	Aliases []string
	// Addr and Addr6 are the member's addresses in the network's
	// prefixes (zero: the next free one; the network's families only).
	Addr, Addr6 netip.Addr
	// Interface is the name of the member's end in its namespace ("":
	// "eth0"). A namespace may be a member of several networks, each
	// through an interface of its own ("eth1" ...): it keeps the default
	// route of the first, reaches the others' subnets directly, and
	// resolves names with the name server of the first that wrote its
	// resolv.conf. The networks stay isolated from each other: such a
	// member cannot forward between them either (the anti-spoofing filter
	// passes only its own addresses).
	Interface string
	// MAC is the member's Ethernet address (nil: a random locally
	// administered one).
	MAC net.HardwareAddr
	// Ports are published at Attach (see Member.Publish).
	Ports []nat.Port
}

// Member is a namespace attached to a network. Its fields say what Attach
// made, for reading.
type Member struct {
	Name        string
	Aliases     []string
	Addr, Addr6 netip.Addr       // its addresses (zero: none of that family)
	HostVeth    string           // its veth's end on the bridge (its name at Attach)
	Interface   string           // its end in the namespace
	MAC         net.HardwareAddr // of Interface

	*member // the library's record (nil in a Member not made by Attach)
}

// Create makes a network: the bridge, with the gateway addresses, the
// nftables entries that masquerade and filter its traffic (nat.AddRules:
// the network is one link of the library's table, isolated from other
// links and networks, nothing unsolicited in from the outside), its
// anti-spoofing filter and its name server. A failure part-way undoes
// what was done. Needs CAP_NET_ADMIN in the host namespace.
func Create(c Config) (*Network, error) {
	n, err := c.create()
	if err != nil {
		return nil, nl.NeedPriv(fmt.Errorf("network: create %s: %w", describe(c.Prefix, c.Prefix6), err), privileges)
	}
	return n, nil
}

// Attach connects the namespace ns to the network: a veth pair with one
// end on the bridge and the other, Interface, in ns with the member's
// addresses and default routes through the gateway, lo up, the network's
// name server in ns's resolv.conf (netns.EtcDir), and the member's names
// on the network. The member's frames are checked as they enter the
// bridge: it can send only from its own Ethernet and IP addresses. A
// failure part-way undoes what was done. Safe for concurrent use.
func (n *Network) Attach(ns *netns.Handle, m MemberConfig) (*Member, error) {
	if n == nil || n.state == nil {
		return nil, fmt.Errorf("network: attach to a network not made by Create: %w", errors.ErrUnsupported)
	}
	mb, err := n.attach(ns, m)
	if err != nil {
		return nil, nl.NeedPriv(fmt.Errorf("network: attach %v to %s: %w", ns, n.Bridge, err), privileges)
	}
	return mb, nil
}

// Close detaches the member and undoes exactly what Attach made, and
// returns only when nothing of it is left: its names leave the network,
// its published ports and their connections go, the veth pair is deleted
// and unlisted (from then on nothing of the member passes), the
// connection tracking entries of its addresses are forgotten (so that a
// later member given the same address receives nothing meant for this
// one), its anti-spoofing entries go and the resolv.conf written for it
// is removed. The namespace itself is the caller's. Idempotent: a second
// call returns the first call's result.
func (m *Member) Close() error {
	if m == nil || m.member == nil {
		return fmt.Errorf("network: close of a member not made by Attach: %w", errors.ErrUnsupported)
	}
	return nl.NeedPriv(m.close(), privileges)
}

// Publish publishes ports of the member (see nat.Port: "docker run -p"),
// all or none; a port with no host address is published on every address
// of the uplink in each of the member's families. Errors as
// nat.Link.Publish's.
func (m *Member) Publish(ports ...nat.Port) error {
	if m == nil || m.member == nil {
		return fmt.Errorf("network: publish on a member not made by Attach: %w", errors.ErrUnsupported)
	}
	return nl.NeedPriv(m.publish(ports), privileges)
}

// Unpublish removes ports the member published and forgets their
// connections (see nat.Link.Unpublish).
func (m *Member) Unpublish(ports ...nat.Port) error {
	if m == nil || m.member == nil {
		return fmt.Errorf("network: unpublish on a member not made by Attach: %w", errors.ErrUnsupported)
	}
	return nl.NeedPriv(m.unpublish(ports), privileges)
}

// Ports returns the member's published ports.
func (m *Member) Ports() []nat.Port {
	if m == nil || m.member == nil {
		return nil
	}
	return m.ports()
}

// Close closes every member still attached (as Member.Close, their pairs
// deleted with one request) and then undoes what Create made: the name
// server, the nftables entries, the bridge and, if no other network of
// any process uses it any more, the library's bridge table. It returns
// only when nothing is left. Idempotent.
func (n *Network) Close() error {
	if n == nil || n.state == nil {
		return fmt.Errorf("network: close of a network not made by Create: %w", errors.ErrUnsupported)
	}
	return nl.NeedPriv(n.close(), privileges)
}

// Members returns the members attached now.
func (n *Network) Members() []*Member {
	if n == nil || n.state == nil {
		return nil
	}
	return n.list()
}

// Lookup returns the addresses the network's name server gives for name
// (a member's name or alias), as members resolve it.
func (n *Network) Lookup(name string) []netip.Addr {
	if n == nil || n.state == nil {
		return nil
	}
	return n.lookup(name)
}

// String describes the network in one line.
func (n *Network) String() string {
	if n == nil {
		return "<nil>"
	}
	return fmt.Sprintf("network %s on bridge %s (gateway %s), uplink %s", describe(n.Prefix, n.Prefix6), n.Bridge,
		describeAddrs(n.Gateway, n.Gateway6), n.Uplink)
}

// String describes the member in one line.
func (m *Member) String() string {
	if m == nil {
		return "<nil>"
	}
	return fmt.Sprintf("member %q (%s) %s <-> bridge port %s", m.Name, describeAddrs(m.Addr, m.Addr6), m.Interface, m.HostVeth)
}

func describe(p4, p6 netip.Prefix) string {
	var s []string
	for _, p := range []netip.Prefix{p4, p6} {
		if p.IsValid() {
			s = append(s, p.String())
		}
	}
	if len(s) == 0 {
		return "(no prefix)"
	}
	return strings.Join(s, ", ")
}

func describeAddrs(a4, a6 netip.Addr) string {
	var s []string
	for _, a := range []netip.Addr{a4, a6} {
		if a.IsValid() {
			s = append(s, a.String())
		}
	}
	return strings.Join(s, ", ")
}

// checkName checks a member's name or alias: one DNS label.
func checkName(name string) error {
	ok := len(name) > 0 && len(name) <= 63 && name[0] != '-' && name[len(name)-1] != '-'
	for _, r := range name {
		ok = ok && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-')
	}
	if !ok {
		return invalid("name %q: not a DNS label (letters, digits, hyphens; at most 63)", name)
	}
	return nil
}

// Info is a network nsnet made in a host, by any process (see List).
type Info struct {
	nat.LinkInfo // the bridge, as nat.Links lists it: owner, alive, uplink, prefixes, published ports
	Members      []MemberInfo
}

// MemberInfo is a member of a network, as List finds it.
type MemberInfo struct {
	HostVeth    string           // its bridge port
	Index       int              // the port's interface index
	Name        string           // its name on the network (MemberConfig.Name)
	Namespace   string           // its namespace: its name under /run/netns, or "nsid N"
	Addr, Addr6 netip.Addr       // its addresses, as the anti-spoofing filter holds them
	MAC         net.HardwareAddr // the Ethernet address it may send from
}

// List lists every network nsnet made in host (nil: the current
// namespace) by any process, live or dead (nat.Sweep removes dead ones),
// with their members, changing nothing: what "nsnet ls" shows.
func List(host *netns.Handle) ([]Info, error) {
	infos, err := list(host)
	if err != nil {
		return nil, nl.NeedPriv(fmt.Errorf("network: list: %w", err), privileges)
	}
	return infos, nil
}
