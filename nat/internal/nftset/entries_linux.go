package nftset

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"
)

// Entries describes what one Link or Rules holds in the sets; elems
// spells it out. It is the library's own record, never read back from
// the kernel or from exported fields.
type Entries struct {
	Link, Uplink int // interface indexes of the host end and the uplink
	// Prefixes are the link's networks, at most one per family, IPv4
	// first.
	Prefixes []netip.Prefix
	// Routed lists the families (unix.NFPROTO_IPV4, _IPV6) forwarded
	// without masquerade.
	Routed        []byte
	NSAddr        netip.Addr // the namespace's IPv4 address (published ports' target)
	NSAddr6       netip.Addr // the namespace's IPv6 address (published IPv6 ports' target)
	AllowSiblings bool
	Mark          string    // owner mark, the comment of each entry
	Ports         []PortMap // published ports
	// GlobalV6: the host forwards the link's IPv6 by the global switch
	// (net.ipv6.conf.all.forwarding), on a kernel without per-interface
	// force_forwarding (see uplinks.Key).
	GlobalV6 bool
}

// FamilyOf is an address's family as meta nfproto gives it.
func FamilyOf(a netip.Addr) byte {
	if a.Is4() {
		return unix.NFPROTO_IPV4
	}
	return unix.NFPROTO_IPV6
}

// FamilyName names a family for people.
func FamilyName(fam byte) string {
	if fam == unix.NFPROTO_IPV6 {
		return "IPv6"
	}
	return "IPv4"
}

// Families are the Families of e's networks.
func (e Entries) Families() []byte {
	var fams []byte
	for _, p := range e.Prefixes {
		fams = append(fams, FamilyOf(p.Addr()))
	}
	return fams
}

// String names the entries' networks, for messages.
func (e Entries) String() string {
	var s string
	for i, p := range e.Prefixes {
		if i > 0 {
			s += ", "
		}
		s += p.String()
	}
	return s
}

// FamKey is an index and a family, as iface_index . nf_proto keys hold
// them (the family padded to its 4-byte field).
func FamKey(index int, fam byte) []byte { return append(IfIndex(index), fam, 0, 0, 0) }

// Elems are the link's own entries, added exclusively and removed with
// it (its covers are not among them).
func (e Entries) Elems() []Elem {
	els := e.ClaimElems()
	els = append(els, Elem{Set: SetLinks, Key: IfIndex(e.Link), Comment: e.Mark})
	for _, fam := range e.Families() {
		key := append(IfIndex(e.Link), FamKey(e.Uplink, fam)...)
		els = append(els, Elem{Set: SetEgress, Key: key, Comment: e.Mark},
			Elem{Set: SetFast, Key: slices.Concat(IfIndex(e.Link), IfIndex(e.Uplink), FamKey(e.Link, fam)), Comment: e.Mark},
			Elem{Set: SetFast, Key: slices.Concat(IfIndex(e.Uplink), IfIndex(e.Link), FamKey(e.Link, fam)), Comment: e.Mark})
		if !slices.Contains(e.Routed, fam) {
			els = append(els, Elem{Set: SetMasq, Key: key, Comment: e.Mark})
		}
	}
	if e.AllowSiblings {
		els = append(els, Elem{Set: SetSiblings, Key: IfIndex(e.Link), Comment: e.Mark})
	}
	els = append(els, Elem{Set: SetSame, Key: append(IfIndex(e.Link), IfIndex(e.Link)...), Comment: e.Mark})
	for _, pm := range e.Ports {
		els = append(els, pm.Elems(e)...)
	}
	return els
}

// ClaimElems are the prefixes' own entries in ClaimElems (claims6), mapped to
// the host end's index. Added exclusively, each fails when its prefix is
// claimed already, or when it is a cover of a claimed one (one inside it).
func (e Entries) ClaimElems() []Elem {
	var els []Elem
	for _, p := range e.Prefixes {
		els = append(els, Elem{Set: ClaimSet(p), Key: ClaimKey(p), Data: IfIndex(e.Link), Comment: e.Mark})
	}
	return els
}

// ClaimElem is p's entry in the claims maps, by key (to look it up or
// remove it).
func ClaimElem(p netip.Prefix) Elem { return Elem{Set: ClaimSet(p), Key: ClaimKey(p)} }

// ClaimSet is the map holding claims of p's family.
func ClaimSet(p netip.Prefix) string {
	if p.Addr().Is4() {
		return SetClaims
	}
	return SetClaims6
}

// Shortest prefixes a link may have (and covers go down to): /8 for
// IPv4, /32 for IPv6.
const (
	MinBits4 = 8
	MinBits6 = 32
)

// MinBits is the shortest prefix of p's family a link may have.
func MinBits(p netip.Prefix) int {
	if p.Addr().Is4() {
		return MinBits4
	}
	return MinBits6
}

// Covers are the entries of every prefix that contains one of e's (down
// to MinBits), mapped to 0. Added without NLM_F_EXCL, each fails only
// where that prefix is claimed itself (an entry mapped to a host end: the
// data differ), so a prefix inside a claimed one is refused; Covers shared
// with other claims are no conflict. Close removes those no other claim
// needs (table.Host.DropCovers); one left behind (by a crash, or a ruleset
// that kept changing) is removed when it is in the way (table.Host.Add),
// by Sweep, or with the table.
func (e Entries) Covers() []Elem {
	var els []Elem
	for _, p := range e.Prefixes {
		for bits := p.Bits() - 1; bits >= MinBits(p); bits-- {
			cv := netip.PrefixFrom(p.Addr(), bits).Masked()
			els = append(els, Elem{Set: ClaimSet(cv), Key: ClaimKey(cv), Data: IfIndex(0)})
		}
	}
	return els
}

// ClaimKey is "address . length" of a prefix, which nft shows as
// "10.0.0.0 . 24": the address (ipv4_addr or ipv6_addr), then the length
// as a 2-byte big-endian number (typed inet_service only for that) padded
// to the 4 bytes of a concatenation's field.
func ClaimKey(p netip.Prefix) []byte {
	return append(p.Masked().Addr().AsSlice(), 0, byte(p.Bits()), 0, 0)
}

// ClaimPrefix reads a ClaimKey back.
func ClaimPrefix(key []byte) (netip.Prefix, bool) {
	if len(key) != 8 && len(key) != 20 {
		return netip.Prefix{}, false
	}
	a, _ := netip.AddrFromSlice(key[:len(key)-4])
	bits := int(binary.BigEndian.Uint16(key[len(key)-4:]))
	p := netip.PrefixFrom(a, bits)
	return p, p.IsValid()
}

// PortMap is one published port, its host address resolved (nat.Port).
// Each mapping is two entries: in the ports map
// (host address . protocol . port : namespace address . port), which the
// prerouting and output chains' DNAT reads, and in port_links (same key :
// the host end's index), with which the same rule marks the connection, so
// that Close and Unpublish find its conntrack entries (see flows.Forget).
// Both are added with NLM_F_EXCL in one transaction: a port published
// already, by this process or another, is refused by the kernel (EEXIST,
// os.ErrExist), atomically. The forward chain accepts connections whose
// destination was translated (ct status dnat) towards a link; postrouting
// masquerades the two cases whose replies would not come back through the
// host otherwise: a link to a port of its own (hairpin, the "same" set)
// and the host's 127.0.0.1 (for which the host end gets route_localnet,
// and the input chain drops loopback destinations arriving from
// any link).
type PortMap struct {
	Addr         netip.Addr
	Proto        uint8 // unix.IPPROTO_TCP or IPPROTO_UDP
	Port, NSPort uint16
	// To is the target address, for Rules (behind a bridge, several);
	// the zero Addr: the link's namespace address of Addr's family.
	To netip.Addr
}

// Key is "address . protocol . port", each field padded to 4 bytes.
func (pm PortMap) Key() []byte {
	return append(pm.Addr.AsSlice(), pm.Proto, 0, 0, 0, byte(pm.Port>>8), byte(pm.Port), 0, 0)
}

// Sets are the maps of pm's family: ports and port_links, or IPv6's.
func (pm PortMap) Sets() (ports, links string) {
	if pm.Addr.Is6() {
		return SetPorts6, SetPortLinks6
	}
	return SetPorts, SetPortLinks
}

func (pm PortMap) String() string {
	proto := "tcp"
	if pm.Proto == unix.IPPROTO_UDP {
		proto = "udp"
	}
	return fmt.Sprintf("%s %s:%d", proto, pm.Addr, pm.Port)
}

// Elems are pm's two entries for the link of e.
func (pm PortMap) Elems(e Entries) []Elem {
	ns := e.NSAddr
	if pm.Addr.Is6() {
		ns = e.NSAddr6
	}
	if pm.To.IsValid() {
		ns = pm.To
	}
	ports, links := pm.Sets()
	return []Elem{
		{Set: ports, Key: pm.Key(), Data: append(ns.AsSlice(), byte(pm.NSPort>>8), byte(pm.NSPort), 0, 0), Comment: e.Mark},
		{Set: links, Key: pm.Key(), Data: IfIndex(e.Link), Comment: e.Mark},
	}
}

func (pm PortMap) Loopback() bool { return pm.Addr.IsLoopback() }
