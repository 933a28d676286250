// Package bridgeset is the library's bridge-family nftables table: the
// anti-spoofing filter of the members of networks (package nat/network).
// Like the inet table (package nftset), it has fixed rules and keeps all
// per-member state in sets keyed by the member's bridge port (the host end
// of its veth pair, by interface index), so that the work per frame stays
// the same however many networks and members there are, and entries are
// commented with their owner's mark, so that Sweep finds a dead owner's.
package bridgeset

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/nat/internal/table"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// TableName is the table's name in the bridge family ("nft list table
// bridge nsnet").
const TableName = "nsnet"

// Set names.
const (
	SetPorts  = "ports"  // iface_index: the members' bridge ports
	SetMACs   = "macs"   // iface_index . ether_addr: the Ethernet address each port may send from
	SetAddrs  = "addrs"  // iface_index . ipv4_addr: the IPv4 address each port may send from
	SetAddrs6 = "addrs6" // iface_index . ipv6_addr: the IPv6 address each port may send from
	SetHosts  = "hosts"  // iface_index . ether_addr: the Ethernet address of each port's bridge (frames to the host)
	SetDNS    = "dns"    // iface_index, dynamic: the rate of each port's queries to the network's name server
)

// DNSRate is how many DNS datagrams a second each member may send to the
// host (its network's name server): more than any program resolving
// names needs, and a bound on what a flooding member costs the host and
// the other members (the name server's socket is shared).
const DNSRate = 2000

const setComment = "nsnet: "

var (
	// Table is the table.
	Table  = &nftables.Table{Family: nftables.TableFamilyBridge, Name: TableName}
	idxMAC = nftables.MustConcatSetType(nftables.TypeIFIndex, nftables.TypeEtherAddr)
	idxIP  = nftables.MustConcatSetType(nftables.TypeIFIndex, nftables.TypeIPAddr)
	idxIP6 = nftables.MustConcatSetType(nftables.TypeIFIndex, nftables.TypeIP6Addr)
	// Sets are the table's sets.
	Sets = []*nftables.Set{
		{Table: Table, Name: SetPorts, ID: 1, KeyType: nftables.TypeIFIndex, KeyByteOrder: binaryutil.NativeEndian, Comment: setComment + "members' bridge ports"},
		{Table: Table, Name: SetMACs, ID: 2, KeyType: idxMAC, Concatenation: true, Comment: setComment + "port . the Ethernet address it sends from"},
		{Table: Table, Name: SetAddrs, ID: 3, KeyType: idxIP, Concatenation: true, Comment: setComment + "port . the IPv4 address it sends from"},
		{Table: Table, Name: SetAddrs6, ID: 4, KeyType: idxIP6, Concatenation: true, Comment: setComment + "port . the IPv6 address it sends from"},
		{Table: Table, Name: SetHosts, ID: 5, KeyType: idxMAC, Concatenation: true, Comment: setComment + "port . its bridge's Ethernet address"},
		{Table: Table, Name: SetDNS, ID: 6, KeyType: nftables.TypeIFIndex, KeyByteOrder: binaryutil.NativeEndian, Dynamic: true,
			HasTimeout: true, Timeout: time.Minute, Comment: setComment + "ports' DNS query rate to the host"},
	}
	byName = map[string]*nftables.Set{SetPorts: Sets[0], SetMACs: Sets[1], SetAddrs: Sets[2], SetAddrs6: Sets[3], SetHosts: Sets[4], SetDNS: Sets[5]}
)

// Member is what one member holds in the sets: its port, its Ethernet
// address and its addresses (invalid: none of that family).
type Member struct {
	Port        int
	MAC         net.HardwareAddr
	Bridge      net.HardwareAddr // its bridge's (the host's) Ethernet address
	Addr, Addr6 netip.Addr
	Mark        string // owner mark, the comment of each entry
}

// Elems are the member's entries.
func (m Member) Elems() []nftset.Elem {
	port := nftset.IfIndex(m.Port)
	els := []nftset.Elem{
		{Set: SetPorts, Key: port, Comment: m.Mark},
		{Set: SetMACs, Key: append(append(port, m.MAC...), 0, 0), Comment: m.Mark},
		{Set: SetHosts, Key: append(append(port, m.Bridge...), 0, 0), Comment: m.Mark},
	}
	if m.Addr.IsValid() {
		els = append(els, nftset.Elem{Set: SetAddrs, Key: append(port, m.Addr.AsSlice()...), Comment: m.Mark})
	}
	if m.Addr6.IsValid() {
		els = append(els, nftset.Elem{Set: SetAddrs6, Key: append(port, m.Addr6.AsSlice()...), Comment: m.Mark})
	}
	return els
}

// Batch is a transaction on the table's sets.
func Batch() *nftset.Batch { return &nftset.Batch{Family: unix.NFPROTO_BRIDGE, Table: TableName} }

// Ethernet types, and where the fields read here are.
const (
	etherARP  = 0x0806
	etherIPv4 = 0x0800
	etherIPv6 = 0x86dd
)

func load(base expr.PayloadBase, offset, n, reg uint32) *expr.Payload {
	return &expr.Payload{DestRegister: reg, Base: base, Offset: offset, Len: n}
}

func eq(reg uint32, b ...byte) *expr.Cmp { return &expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: b} }

func iif() *expr.Meta { return &expr.Meta{Key: expr.MetaKeyIIF, Register: 1} }

func lookup(set string, invert bool) *expr.Lookup {
	s := byName[set]
	return &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: invert}
}

func verdict(k expr.VerdictKind, chain string) *expr.Verdict {
	return &expr.Verdict{Kind: k, Chain: chain}
}

func l4(proto byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, eq(1, proto)}
}

func icmp6(typ byte) []expr.Any {
	return append(l4(unix.IPPROTO_ICMPV6), load(expr.PayloadBaseTransportHeader, 0, 1, 1), eq(1, typ))
}

func udpSport(port uint16) []expr.Any {
	return append(l4(unix.IPPROTO_UDP), load(expr.PayloadBaseTransportHeader, 0, 2, 1), eq(1, byte(port>>8), byte(port)))
}

// AddSkeleton queues the table, its sets, chains and rules:
//
//	table bridge nsnet {
//	  set ports, macs, addrs, addrs6
//	  chain prerouting { type filter hook prerouting priority -300; policy accept;
//	    iif @ports jump member }               # frames from a member; nothing else is looked at
//	  chain member {
//	    iif . ether saddr != @macs drop        # another Ethernet address
//	    ether type arp jump arp
//	    ether type ip jump ip
//	    ether type ip6 jump ip6
//	    drop }                                 # VLAN tags, other protocols
//	  chain arp {
//	    iif . arp saddr ether @macs iif . arp saddr ip @addrs accept
//	    drop }                                 # ARP claiming another's address
//	  chain ip {
//	    udp sport 67 drop                      # no DHCP server among members
//	    iif . ip saddr @addrs accept
//	    drop }                                 # a source not its own
//	  chain ip6 {
//	    icmpv6 type { nd-router-advert, nd-redirect } drop   # no router among members
//	    udp sport 547 drop                     # nor a DHCPv6 server
//	    iif . ip6 saddr @addrs6 jump own6
//	    ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld-listener-report, mld2-listener-report } accept
//	    drop }
//	  chain own6 {
//	    icmpv6 type nd-neighbor-advert iif . icmpv6 target != @addrs6 drop  # advertising another's address
//	    accept }
//	}
//
// Frames from one member to another are switched by the bridge; where
// br_netfilter is loaded (Docker loads it), the kernel passes them through
// the IPv4 and IPv6 hooks too, and through connection tracking, which
// costs a tenth of their throughput and tracks nothing nsnet needs (they
// are never routed nor translated): they are not tracked. Frames to the
// host (to the bridge's own address) are, as the host routes and
// masquerades them.
//
// The members' frames are checked as they enter the bridge, before it
// forwards them to another member or passes them up to the host: a member
// can send only from its own Ethernet and IP addresses, and claim only
// its own in ARP and neighbour advertisements, so it cannot take another
// member's traffic nor speak in its name (the host's reverse-path check
// sees only the network, not which member). The host's frames, and
// members' frames to each other, are not otherwise filtered (the inet
// table filters what the host routes).
func AddSkeleton(c *nftables.Conn) error {
	c.CreateTable(Table)
	for _, s := range Sets {
		if err := c.AddSet(s, nil); err != nil {
			return err
		}
	}
	accept := nftables.ChainPolicyAccept
	pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: Table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Policy: &accept})
	chain := func(name string) *nftables.Chain { return c.AddChain(&nftables.Chain{Name: name, Table: Table}) }
	member, arp, ip, ip6, own6 := chain("member"), chain("arp"), chain("ip"), chain("ip6"), chain("own6")
	rule := func(ch *nftables.Chain, why string, e ...expr.Any) {
		c.AddRule(&nftables.Rule{Table: Table, Chain: ch, Exprs: e, UserData: userdata.AppendString(nil, userdata.TypeComment, "nsnet: "+why)})
	}
	drop := verdict(expr.VerdictDrop, "")
	accepted := verdict(expr.VerdictAccept, "")
	ll := expr.PayloadBaseLLHeader
	nh := expr.PayloadBaseNetworkHeader
	th := expr.PayloadBaseTransportHeader

	rule(pre, "from a member of a network", iif(), lookup(SetPorts, false), verdict(expr.VerdictJump, "member"))

	rule(member, "from an Ethernet address not the member's", iif(), load(ll, 6, 6, 9), lookup(SetMACs, true), drop)
	rule(member, "to another member (not to the host): switched, never routed nor translated, so not tracked (br_netfilter would pass it through conntrack)",
		iif(), load(ll, 0, 6, 9), lookup(SetHosts, true), &expr.Notrack{})
	s := byName[SetDNS]
	rule(member, "DNS to the host over the member's rate",
		iif(), load(ll, 0, 6, 9), lookup(SetHosts, false),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, eq(1, unix.IPPROTO_UDP), load(th, 2, 2, 1), eq(1, 0, 53),
		iif(), &expr.Dynset{SrcRegKey: 1, SetName: s.Name, SetID: s.ID, Operation: 1, Timeout: time.Minute,
			Exprs: []expr.Any{&expr.Limit{Type: expr.LimitTypePkts, Rate: DNSRate, Over: true, Unit: expr.LimitTimeSecond, Burst: DNSRate}}},
		drop)
	rule(member, "ARP", load(ll, 12, 2, 1), eq(1, etherARP>>8, etherARP&0xff), verdict(expr.VerdictJump, "arp"))
	rule(member, "IPv4", load(ll, 12, 2, 1), eq(1, etherIPv4>>8, etherIPv4&0xff), verdict(expr.VerdictJump, "ip"))
	rule(member, "IPv6", load(ll, 12, 2, 1), eq(1, etherIPv6>>8, etherIPv6&0xff), verdict(expr.VerdictJump, "ip6"))
	rule(member, "anything else (VLAN tags, other protocols)", drop)

	rule(arp, "the member's own Ethernet and IPv4 addresses",
		iif(), load(nh, 8, 6, 9), lookup(SetMACs, false), iif(), load(nh, 14, 4, 9), lookup(SetAddrs, false), accepted)
	rule(arp, "ARP for another's address", drop)

	rule(ip, "DHCP server", append(udpSport(67), drop)...)
	rule(ip, "from the member's own address", iif(), load(nh, 12, 4, 9), lookup(SetAddrs, false), accepted)
	rule(ip, "from another address", drop)

	rule(ip6, "router advertisement", append(icmp6(134), drop)...)
	rule(ip6, "redirect", append(icmp6(137), drop)...)
	rule(ip6, "DHCPv6 server", append(udpSport(547), drop)...)
	rule(ip6, "from the member's own address", iif(), load(nh, 8, 16, 9), lookup(SetAddrs6, false), verdict(expr.VerdictJump, "own6"))
	for _, typ := range []byte{135, 131, 143} {
		rule(ip6, "duplicate address detection and multicast listener reports, from the unspecified address",
			append([]expr.Any{load(nh, 8, 16, 1), eq(1, make([]byte, 16)...)}, append(icmp6(typ), accepted)...)...)
	}
	rule(ip6, "from another address", drop)

	rule(own6, "neighbour advertisement for another's address",
		append(icmp6(136), iif(), load(th, 8, 16, 9), lookup(SetAddrs6, true), drop)...)
	rule(own6, "the member's own", accepted)
	return nil
}

// ErrForeign is a bridge table called nsnet that is not the library's.
var ErrForeign = errors.New("a bridge nftables table named nsnet that is not nsnet's")

// Own checks that the table there is the library's (its sets, by name and
// key type); an error matching nftset.IsENOENT if there is none.
func Own(c *nftables.Conn) error {
	got, err := c.GetSets(Table)
	if err != nil {
		return fmt.Errorf("read table bridge %s: %w", TableName, err)
	}
	have := map[string]string{}
	for _, s := range got {
		have[s.Name] = s.KeyType.Name
	}
	for _, s := range Sets {
		if have[s.Name] != s.KeyType.Name {
			return fmt.Errorf("%w (it has no set %q of type %s); remove or rename it", ErrForeign, s.Name, s.KeyType.Name)
		}
	}
	return nil
}

// Ensure makes the table unless the library's is there (made by another
// process, say).
func Ensure(host *netns.Handle) error {
	for attempt := 0; attempt < 4; attempt++ {
		c, err := table.NFTConn(host)
		if err != nil {
			return err
		}
		err = Own(c)
		if err == nil || !nftset.IsENOENT(err) {
			c.CloseLasting()
			return err
		}
		if err = AddSkeleton(c); err == nil {
			err = c.Flush()
		}
		c.CloseLasting()
		if !errors.Is(err, unix.EEXIST) {
			return err
		}
		// Another process made it meanwhile: look again.
	}
	return fmt.Errorf("bridge table: made and removed by others four times running")
}

// Entry is one entry of the table with its owner's mark.
type Entry struct {
	Elem  nftset.Elem
	Owner string // the owner's ID ("": no mark of nsnet's)
}

// Read reads the entries of every set; ENOENT (nftset.IsENOENT) if there
// is no table.
func Read(c *nftables.Conn, parse func(comment string) (id string, ok bool)) ([]Entry, error) {
	var out []Entry
	for _, s := range Sets {
		if s.Dynamic {
			continue // (the kernel's: rates, which time out)
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("set %s: %w", s.Name, err)
		}
		for _, x := range els {
			id, _ := parse(x.Comment)
			out = append(out, Entry{Elem: nftset.Elem{Set: s.Name, Key: x.Key}, Owner: id})
		}
	}
	return out, nil
}

// Drop removes the table if it holds no entry, in a transaction that
// commits only if the ruleset did not change since it was found empty (so
// that an entry added meanwhile by another process is never lost with
// it). It reports whether the table went.
func Drop(c *nftables.Conn, raw *netlink.Conn) (bool, error) {
	gen, err := nftset.RuleGeneration(raw)
	if err != nil {
		return false, err
	}
	for _, s := range Sets {
		if s.Dynamic {
			continue // (rates, not anyone's entries)
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			if nftset.IsENOENT(err) {
				return false, nil
			}
			return false, err
		}
		if len(els) > 0 {
			return false, nil
		}
	}
	b := Batch()
	b.Gen = &gen
	if err := b.DelTable(); err != nil {
		return false, err
	}
	err = b.Commit(raw)
	if errors.Is(err, nftset.ErrGenChanged) || nftset.IsENOENT(err) {
		return false, nil // changed meanwhile: the next to find it empty drops it
	}
	return err == nil, err
}
