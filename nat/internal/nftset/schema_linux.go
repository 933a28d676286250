package nftset

import (
	"encoding/binary"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Set names. Per-link state lives in these sets, so the rules — and the
// work every packet does — stay the same however many links there are.
// Links are named by interface index, which the kernel never gives two
// live links and which a rename does not change: a name can be reused or
// renamed under the library, an index cannot.
const (
	SetLinks      = "links"       // iface_index: host ends of our links
	SetEgress     = "egress"      // iface_index . iface_index . nf_proto: host end . its uplink . a family it forwards
	SetMasq       = "masq"        // iface_index . iface_index . nf_proto: host end . its uplink . a family it masquerades
	SetSiblings   = "siblings"    // iface_index: links that may talk to each other
	SetClaims     = "claims"      // map ipv4_addr . inet_service : mark: IPv4 prefixes held (see nat/internal/table)
	SetClaims6    = "claims6"     // map ipv6_addr . inet_service : mark: IPv6 prefixes held
	SetUplinks    = "uplinks"     // iface_index . nf_proto . ifname: uplink . family . owner using its forwarding
	SetOpened     = "opened"      // iface_index . nf_proto: uplinks (and families) whose forwarding nsnet turned on
	SetPorts      = "ports"       // map ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service: published ports
	SetPortLinks  = "port_links"  // map ipv4_addr . inet_proto . inet_service : mark: the host end of each
	SetSame       = "same"        // iface_index . iface_index: host end . itself, for hairpin traffic
	SetPorts6     = "ports6"      // map ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service: published IPv6 ports
	SetPortLinks6 = "port_links6" // map ipv6_addr . inet_proto . inet_service : mark: the host end of each
	SetFast       = "fast"        // iface_index . iface_index . mark . nf_proto: in . out . connection's mark . family of a link's own connections
)

// LinkSets are the sets and maps whose entries belong to one link each,
// commented with its owner's mark (claims, whose covers are shared, and
// the uplinks and opened sets are apart).
var LinkSets = []string{SetLinks, SetEgress, SetMasq, SetSiblings, SetSame, SetPorts, SetPortLinks, SetPorts6, SetPortLinks6, SetFast}

// Fixed set IDs: google/nftables draws them from a package-level counter
// that races between Conns; within one transaction they only need to be
// distinct.
const (
	idLinks uint32 = iota + 1
	idEgress
	idSiblings
	idClaims
	idUplinks
	idOpened
	idPorts
	idPortLinks
	idSame
	idMasq
	idClaims6
	idPorts6
	idPortLinks6
	idFast
)

// setComment starts every set's comment, for people reading nft's output
// (ownership is checked by the sets' names and key types: see OwnTable).
const setComment = "nsnet: "

var (
	Table       = &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
	indexPair   = nftables.MustConcatSetType(nftables.TypeIFIndex, nftables.TypeIFIndex)
	pairDotFam  = nftables.MustConcatSetType(nftables.TypeIFIndex, nftables.TypeIFIndex, nftables.TypeNFProto)
	indexDotFam = nftables.MustConcatSetType(nftables.TypeIFIndex, nftables.TypeNFProto)
	indexDotID  = nftables.MustConcatSetType(nftables.TypeIFIndex, nftables.TypeNFProto, nftables.TypeIFName)
	addrDotLen  = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	addr6DotLen = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService)
	portKey     = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	portTarget  = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	portKey6    = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
	portTarget6 = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService)
	fastKey     = nftables.MustConcatSetType(nftables.TypeIFIndex, nftables.TypeIFIndex, nftables.TypeMark, nftables.TypeNFProto)
	Sets        = []*nftables.Set{
		{Table: Table, Name: SetLinks, ID: idLinks, KeyType: nftables.TypeIFIndex, KeyByteOrder: binaryutil.NativeEndian, Comment: setComment + "host ends"},
		{Table: Table, Name: SetEgress, ID: idEgress, KeyType: pairDotFam, Concatenation: true, Comment: setComment + "host end . uplink . family: forwarded"},
		{Table: Table, Name: SetMasq, ID: idMasq, KeyType: pairDotFam, Concatenation: true, Comment: setComment + "host end . uplink . family: masqueraded"},
		{Table: Table, Name: SetSiblings, ID: idSiblings, KeyType: nftables.TypeIFIndex, KeyByteOrder: binaryutil.NativeEndian, Comment: setComment + "links that may reach each other"},
		{Table: Table, Name: SetClaims, ID: idClaims, KeyType: addrDotLen, Concatenation: true, IsMap: true, DataType: nftables.TypeMark,
			Comment: setComment + "prefix . length : host end (a prefix of a live link), or 0 (one containing one)"},
		{Table: Table, Name: SetClaims6, ID: idClaims6, KeyType: addr6DotLen, Concatenation: true, IsMap: true, DataType: nftables.TypeMark,
			Comment: setComment + "IPv6 prefix . length : host end (a prefix of a live link), or 0 (one containing one)"},
		{Table: Table, Name: SetUplinks, ID: idUplinks, KeyType: indexDotID, Concatenation: true, Comment: setComment + "uplink . family . owner using its forwarding"},
		{Table: Table, Name: SetOpened, ID: idOpened, KeyType: indexDotFam, Concatenation: true, Comment: setComment + "uplink . family whose forwarding nsnet turned on: only the links' traffic is forwarded from them"},
		{Table: Table, Name: SetPorts, ID: idPorts, KeyType: portKey, Concatenation: true, IsMap: true, DataType: portTarget,
			Comment: setComment + "published ports: host address . protocol . port : namespace address . port"},
		{Table: Table, Name: SetPortLinks, ID: idPortLinks, KeyType: portKey, Concatenation: true, IsMap: true, DataType: nftables.TypeMark,
			Comment: setComment + "published ports: host address . protocol . port : the host end's index"},
		{Table: Table, Name: SetPorts6, ID: idPorts6, KeyType: portKey6, Concatenation: true, IsMap: true, DataType: portTarget6,
			Comment: setComment + "published IPv6 ports: host address . protocol . port : namespace address . port"},
		{Table: Table, Name: SetPortLinks6, ID: idPortLinks6, KeyType: portKey6, Concatenation: true, IsMap: true, DataType: nftables.TypeMark,
			Comment: setComment + "published IPv6 ports: host address . protocol . port : the host end's index"},
		{Table: Table, Name: SetSame, ID: idSame, KeyType: indexPair, Concatenation: true, Comment: setComment + "host end . itself: hairpin traffic to a published port"},
		{Table: Table, Name: SetFast, ID: idFast, KeyType: fastKey, Concatenation: true,
			Comment: setComment + "in . out . connection mark . family: the packets of a link's own connections, out of its uplink and back (see the forward chain)"},
	}
	ByName = func() map[string]*nftables.Set {
		m := map[string]*nftables.Set{}
		for _, s := range Sets {
			m[s.Name] = s
		}
		return m
	}()
)

func comment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, "nsnet: "+s) }

// IfName pads an interface name to the 16 bytes (IFNAMSIZ) that meta
// iifname/oifname load and sets of type IfName hold.
func IfName(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func metaLoad(key expr.MetaKey, reg uint32) *expr.Meta { return &expr.Meta{Key: key, Register: reg} }

func lookup(set string, reg uint32, invert bool) *expr.Lookup {
	s := ByName[set]
	return &expr.Lookup{SourceRegister: reg, SetName: s.Name, SetID: s.ID, Invert: invert}
}

func verdict(k expr.VerdictKind, chain string) *expr.Verdict {
	return &expr.Verdict{Kind: k, Chain: chain}
}

// IfIndex is an interface index as meta iif/oif load it and iface_index
// sets hold it: 4 bytes, host byte order.
func IfIndex(i int) []byte { return binary.NativeEndian.AppendUint32(nil, uint32(i)) }

// iifDotOif loads "iif . oif" into registers 1 and 9, the layout nft uses
// for a concatenation (each field in its own 32-bit register).
func iifDotOif() []expr.Any {
	return []expr.Any{metaLoad(expr.MetaKeyIIF, 1), metaLoad(expr.MetaKeyOIF, 9)}
}

// iifDotOifDotFam loads "iif . oif . meta nfproto" into registers 1, 9
// and 10 (the family is one byte, zero-padded to its register as in the
// sets' keys).
func iifDotOifDotFam() []expr.Any {
	return append(iifDotOif(), metaLoad(expr.MetaKeyNFPROTO, 10))
}

// isFamily matches packets of family fam (unix.NFPROTO_IPV4 or _IPV6):
// rules that read a header of one family are guarded by it in the inet
// table.
func isFamily(fam byte) []expr.Any {
	return []expr.Any{metaLoad(expr.MetaKeyNFPROTO, 1), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}}}
}

// icmpv6Type matches ICMPv6 messages of type typ.
func icmpv6Type(typ byte) []expr.Any {
	return append(isFamily(unix.NFPROTO_IPV6),
		metaLoad(expr.MetaKeyL4PROTO, 1), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{typ}})
}

// AddSkeleton queues the table, its sets, chains and rules:
//
//	table inet nsnet {
//	  set links, egress, masq, siblings, same, fast, uplinks, opened; map claims, claims6, ports, port_links, ports6, port_links6
//	  chain forward { type filter hook forward priority filter; policy accept;
//	    ct state established iif . oif . ct mark . meta nfproto @fast accept  # a link's own flow, checked at its start
//	    iif @links jump from_link
//	    oif @links jump to_link
//	    iif . meta nfproto @opened drop       # the host forwards nothing else it did not before
//	    0 . meta nfproto @opened drop }       # (the same, for a family's global switch)
//	  chain from_link {
//	    iif . oif @same accept                # within its own network (a bridge's members, see nat/network)
//	    fib saddr . iif oif missing drop      # spoofed source
//	    ct state related iif . ct mark != @same iif != @siblings drop  # an error about another link's connection
//	    ct state related iif . ct mark != @same ct mark != @siblings drop  # (not both siblings)
//	    ct mark set iif                       # for Close (see flows.Forget)
//	    iif . oif . meta nfproto @egress ct state new,established,related accept  # out of its own uplink, tracked
//	    iif @siblings oif @siblings accept
//	    ct status dnat oif @links accept      # to a published port of a link
//	    drop }                                # anywhere else
//	  chain to_link {
//	    ct state established,related accept  # replies, and the ICMP errors of its flows
//	    ct status dnat accept                 # to a published port
//	    drop }                                # nothing unsolicited
//	  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//	    iif . oif . meta nfproto @masq masquerade                # not for a routed family
//	    ct status dnat iif . oif @same masquerade                # hairpin
//	    ct status dnat iif 0 fib saddr type != local ct mark . oif @same masquerade  # hairpin bridged (nat/network)
//	    ct status dnat ip saddr 127.0.0.0/8 oif @links masquerade } # the host's 127.0.0.1
//	  chain prerouting { type nat hook prerouting priority dstnat - 1; policy accept;
//	    ip daddr 127.0.0.0/8 iif @links drop # before anyone's DNAT (CVE-2020-8558)
//	    ip daddr != 127.0.0.0/8 ct mark set … map @port_links dnat to … map @ports
//	    meta nfproto ipv6 ct mark set … map @port_links6 dnat ip6 to … map @ports6 }
//	  chain output { type nat hook output priority dstnat; policy accept;
//	    ct mark set … map @port_links dnat to … map @ports
//	    meta nfproto ipv6 ct mark set … map @port_links6 dnat ip6 to … map @ports6
//	    oif @links fib daddr type unicast ct mark set oif }  # the host's own connection to a link
//	  chain input { type filter hook input priority raw; policy accept;
//	    iif @links jump link_to_host }
//	  chain link_to_host {
//	    ip daddr 127.0.0.0/8 ct direction reply iif . ct mark @same accept  # the host's own, translated back
//	    ip daddr 127.0.0.0/8 drop
//	    meta nfproto ipv4 fib saddr . iif oif missing drop  # spoofed source
//	    (ipv6, not fe80::/10 or ::) fib saddr . iif oif missing drop
//	    ct state related iif . ct mark != @same drop  # an error about another link's connection
//	    ct state new ct mark set iif
//	    icmpv6 type nd-router-advert drop
//	    icmpv6 type nd-redirect drop }
//	}
//
// (see PortMap for the published ports).
//
// Both families go through the same rules and sets (the sets are keyed by
// interface index, and the family where it matters); a rule that reads an
// IPv4 header is guarded by "meta nfproto ipv4". Neighbour discovery never
// passes forward (it is link-local), and the ICMPv6 errors IPv6 needs
// (packet too big above all) are related to the flow they answer.
//
// Packets of other interfaces match no rule of forward and leave the
// table after three set lookups (two for a new connection), untouched. A link's packets leave only by
// the uplink it was connected to, masqueraded there, matched by index: a
// renamed uplink keeps its index and its masquerade; a deleted and
// re-created one gets a new index, and the link's packets are dropped, not
// sent out un-masqueraded; so are packets towards any other network of
// the host. The spoofing check is a strict reverse-path lookup, as
// rp_filter=1 does: a source passes only if the host routes it back out
// of the link it came in by, which the link's prefix is (its address on
// the host end makes that route); the input chain does the same for a
// link's packets to the host itself (rp_filter on the host ends would
// cost every forwarded packet the lookup). It costs one FIB lookup per packet
// however many links there are, except for the packets of the connections
// the link itself began, out of its own uplink, and their replies: the
// first packet passed the lookup and marked the connection with the
// link's index, and the first rule of forward accepts the rest with one
// lookup in the fast set, which holds "host end . uplink . host end .
// family" and "uplink . host end . host end . family" for each family of
// each link (the same rule for the replies saves the two lookups and the
// jump that reach to_link). Conntrack's tuples do not include the
// interface, so without the mark another link could send with the first
// one's address and ports and ride its connection
// (TestNoRidingAnotherLinksFlow); the mark of a connection is 0 until
// from_link or a published port's DNAT sets it, and "ct state
// established" keeps a mark someone else set on a new connection from
// skipping the checks. This one rule is the per-packet cost of an
// established flow: with the input chain's rules no longer in prerouting,
// it took 64-byte UDP from 0.95x to 0.98x the rate of the tutorial's
// three iptables rules (bench/README.md).
func AddSkeleton(c *nftables.Conn) error {
	c.CreateTable(Table)
	for _, s := range Sets {
		if err := c.AddSet(s, nil); err != nil {
			return err
		}
	}
	accept := nftables.ChainPolicyAccept
	base := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: Table, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept})
	}
	forward := base("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	fromLink := c.AddChain(&nftables.Chain{Name: "from_link", Table: Table})
	toLink := c.AddChain(&nftables.Chain{Name: "to_link", Table: Table})
	post := base("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	// One below dstnat: before the DNAT of iptables' nat table (Docker's,
	// kube-proxy's), which would translate a link's packet to 127.0.0.1
	// before the rule below drops it.
	pre := base("prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityRef(*nftables.ChainPriorityNATDest-1))
	out := base("output", nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest)
	in := base("input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityRaw)
	rule := func(ch *nftables.Chain, why string, e ...expr.Any) {
		c.AddRule(&nftables.Rule{Table: Table, Chain: ch, Exprs: e, UserData: comment(why)})
	}
	rule(forward, "a link's own connection, out of its uplink or back (its first packet passed the checks of from_link, which marked the connection with the link's index)",
		append(ctState(expr.CtStateBitESTABLISHED), metaLoad(expr.MetaKeyIIF, 1), metaLoad(expr.MetaKeyOIF, 9),
			&expr.Ct{Key: expr.CtKeyMARK, Register: 10}, metaLoad(expr.MetaKeyNFPROTO, 11), lookup(SetFast, 1, false), verdict(expr.VerdictAccept, ""))...)
	rule(forward, "from a connected namespace",
		metaLoad(expr.MetaKeyIIF, 1), lookup(SetLinks, 1, false), verdict(expr.VerdictJump, "from_link"))
	rule(forward, "to a connected namespace",
		metaLoad(expr.MetaKeyOIF, 1), lookup(SetLinks, 1, false), verdict(expr.VerdictJump, "to_link"))
	rule(forward, "anything else from an uplink whose forwarding (of this family) nsnet turned on",
		metaLoad(expr.MetaKeyIIF, 1), metaLoad(expr.MetaKeyNFPROTO, 9), lookup(SetOpened, 1, false), verdict(expr.VerdictDrop, ""))
	rule(forward, "anything else, while nsnet turned this family's forwarding on for every interface (IPv6 before Linux 6.17)",
		&expr.Immediate{Register: 1, Data: []byte{0, 0, 0, 0}}, metaLoad(expr.MetaKeyNFPROTO, 9), lookup(SetOpened, 1, false), verdict(expr.VerdictDrop, ""))

	addFromLink(func(why string, e ...expr.Any) { rule(fromLink, why, e...) })
	addToLink(func(why string, e ...expr.Any) { rule(toLink, why, e...) })
	addPostrouting(func(why string, e ...expr.Any) { rule(post, why, e...) })
	// A link's packet to 127.0.0.0/8 that someone else's DNAT translates
	// before the routing decision escapes the martian check and the input
	// chain (CVE-2020-8558): dropped here, where only the first packet of
	// a connection passes (the input chain drops the untracked ones).
	rule(pre, "loopback addresses from a link, before anyone's DNAT translates them",
		append(loopbackFromLink(), verdict(expr.VerdictDrop, ""))...)
	// Not for 127.0.0.0/8 arriving from outside: translated before the
	// routing decision, such a packet would not be dropped as a martian
	// (the hole of CVE-2020-8558); only the host reaches 127.0.0.1 ports.
	rule(pre, "a published port (127.0.0.1 ports: the host's own connections only, in output)",
		append([]expr.Any{metaLoad(expr.MetaKeyNFPROTO, 1), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{127}}}, publishedDNAT(unix.NFPROTO_IPV4)...)...)
	rule(out, "a published port, for the host's own connections", publishedDNAT(unix.NFPROTO_IPV4)...)
	rule(pre, "a published IPv6 port", publishedDNAT(unix.NFPROTO_IPV6)...)
	rule(out, "a published IPv6 port, for the host's own connections", publishedDNAT(unix.NFPROTO_IPV6)...)
	// (Unicast: a network's bridge's own multicast reports stay the
	// host's, unmarked, for the network's Close.)
	rule(out, "the host's own connection to a link: marked with the link's index (for its Close, and errors about it: see addToHost)",
		metaLoad(expr.MetaKeyOIF, 1), lookup(SetLinks, 1, false),
		&expr.Fib{Register: 9, ResultADDRTYPE: true, FlagDADDR: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 9, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_UNICAST)},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true})
	toHost := c.AddChain(&nftables.Chain{Name: ChainToHost, Table: Table})
	rule(in, "from a connected namespace to the host itself",
		metaLoad(expr.MetaKeyIIF, 1), lookup(SetLinks, 1, false), verdict(expr.VerdictJump, ChainToHost))
	addToHost(func(why string, e ...expr.Any) { rule(toHost, why, e...) })
	return nil
}

// ChainToHost is the chain of the rules for what a link sends the host
// itself (see addToHost).
const ChainToHost = "link_to_host"

// addFromLink adds, with rule, the from_link chain's rules: what a link
// may send through the host (its connections' first packets, and whatever
// the fast rule of forward does not accept).
func addFromLink(rule func(why string, e ...expr.Any)) {
	rule("within the link's own network: the members of a bridge (package nat/network), whose frames to each other br_netfilter passes through this hook (their sources checked by the bridge table), before the reverse-path lookup they do not need",
		append(iifDotOif(), lookup(SetSame, 1, false), verdict(expr.VerdictAccept, ""))...)
	rule("source not routed back out of the link", reversePathMissing()...)
	// Conntrack relates an ICMP error to a connection by the header it
	// quotes, from whichever link it comes, checking only its outer
	// destination: a namespace could make one up about another link's
	// connection, to break it (the other end reads "connection refused")
	// and to take its mark (out of its Close's reach). An error passes
	// only on the connection's own link, or between siblings that both
	// allow it (two rules: "not both").
	notOwnRelated := slices.Concat(ctState(expr.CtStateBitRELATED), []expr.Any{metaLoad(expr.MetaKeyIIF, 1),
		&expr.Ct{Key: expr.CtKeyMARK, Register: 9}, lookup(SetSame, 1, true)})
	rule("an error about another link's connection, from a link that does not allow siblings",
		slices.Concat(notOwnRelated, []expr.Any{lookup(SetSiblings, 1, true), verdict(expr.VerdictDrop, "")})...)
	rule("an error about another link's connection, of a link that does not allow siblings",
		slices.Concat(notOwnRelated, []expr.Any{&expr.Ct{Key: expr.CtKeyMARK, Register: 1}, lookup(SetSiblings, 1, true), verdict(expr.VerdictDrop, "")})...)
	rule("tag the link's connections with its index, for Close (see flows.Forget)",
		metaLoad(expr.MetaKeyIIF, 1),
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true})
	rule("out of its own uplink, in a family it has, tracked (an invalid or untracked packet would leave un-masqueraded)",
		append(append(iifDotOifDotFam(), lookup(SetEgress, 1, false)), append(ctStateTracked(), verdict(expr.VerdictAccept, ""))...)...)
	rule("siblings allowed",
		metaLoad(expr.MetaKeyIIF, 1), lookup(SetSiblings, 1, false),
		metaLoad(expr.MetaKeyOIF, 1), lookup(SetSiblings, 1, false), verdict(expr.VerdictAccept, ""))
	rule("to a published port of a link",
		append(ctStatusDNAT(), metaLoad(expr.MetaKeyOIF, 1), lookup(SetLinks, 1, false), verdict(expr.VerdictAccept, ""))...)
	rule("anywhere else", verdict(expr.VerdictDrop, ""))
}

// addToLink adds, with rule, the to_link chain's rules: what may reach a
// link through the host.
func addToLink(rule func(why string, e ...expr.Any)) {
	rule("replies",
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		verdict(expr.VerdictAccept, ""))
	rule("to a published port", append(ctStatusDNAT(), verdict(expr.VerdictAccept, ""))...)
	rule("unsolicited", verdict(expr.VerdictDrop, ""))
}

// addToHost adds, with rule, the rules for what a link sends the host
// itself, which the input chain's one rule jumps to: the host's other
// packets pay one lookup, forwarded ones none (in prerouting they cost
// every forwarded packet). (A link's packet to 127.0.0.0/8 is dropped in
// prerouting already, but for an untracked one, which the NAT hooks do not
// see.)
func addToHost(rule func(why string, e ...expr.Any)) {
	iifAndMark := []expr.Any{metaLoad(expr.MetaKeyIIF, 1), &expr.Ct{Key: expr.CtKeyMARK, Register: 9}}
	// The host's own connection to a 127.0.0.1 port gets its replies from
	// the link, their destination translated back to 127.0.0.1 before they
	// get here: from the publishing link only (the connection's mark, set
	// by the DNAT rule).
	rule("replies to the host's own connections to a 127.0.0.1 port, from the link that publishes it",
		slices.Concat(toLoopback(), []expr.Any{&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1}}}, // IP_CT_DIR_REPLY
			iifAndMark, []expr.Any{lookup(SetSame, 1, false), verdict(expr.VerdictAccept, "")})...)
	rule("loopback addresses (route_localnet is on for a link with a 127.0.0.1 port)",
		append(toLoopback(), verdict(expr.VerdictDrop, ""))...)
	// The forward path checks a link's sources in from_link; the host's
	// own sockets need the same check, or a namespace could speak in
	// another's name to them: reply to the host's own connections to the
	// other namespace (conntrack matches a reply whatever link it comes
	// from), query the other's DNS relay. IPv6 link-local and unspecified
	// sources (neighbour discovery) are the link's own and not looked up.
	rule("IPv4 source not routed back out of the link",
		append(isFamily(unix.NFPROTO_IPV4), reversePathMissing()...)...)
	rule("IPv6 source, neither link-local nor unspecified, not routed back out of the link",
		slices.Concat(isFamily(unix.NFPROTO_IPV6), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 2},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 2, Mask: []byte{0xff, 0xc0}, Xor: []byte{0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0xfe, 0x80}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 16)},
		}, reversePathMissing())...)
	// Every connection between a link and the host carries the link's
	// index, as the links' forwarded ones do (the host's own, from the
	// output chain): an ICMP error about one passes only from that link
	// (see from_link).
	rule("an error about a connection of the host with another link",
		slices.Concat(ctState(expr.CtStateBitRELATED), iifAndMark, []expr.Any{lookup(SetSame, 1, true), verdict(expr.VerdictDrop, "")})...)
	rule(newestRule, // (see CheckRules)
		append(ctState(expr.CtStateBitNEW), metaLoad(expr.MetaKeyIIF, 1), &expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true})...)
	// The host end accepts router advertisements (accept_ra: its
	// force_forwarding does not count as forwarding there), and takes a
	// redirect from a link-local neighbour: a namespace could give the
	// host a default route or move one of its routes.
	rule("router advertisements", append(icmpv6Type(ndRouterAdvert), verdict(expr.VerdictDrop, ""))...)
	rule("redirects", append(icmpv6Type(ndRedirect), verdict(expr.VerdictDrop, ""))...)
}

// addPostrouting adds the postrouting chain's rules with rule: the
// masquerade out of the uplink and the hairpin cases.
func addPostrouting(rule func(why string, e ...expr.Any)) {
	rule("masquerade out of the uplink (the families not routed)",
		append(iifDotOifDotFam(), lookup(SetMasq, 1, false), &expr.Masq{})...)
	rule("a link to a published port of its own (hairpin): from the host end's address",
		append(append(ctStatusDNAT(), iifDotOif()...), lookup(SetSame, 1, false), &expr.Masq{})...)
	// A network's members' hairpin traffic is bridged back out where
	// br_netfilter is loaded, and passes this hook with no input
	// interface: matched by the connection's mark (the publishing link's
	// index, set by the DNAT rule) and a source that is not the host's own
	// (the host's own connections pass here with no input interface too).
	rule("a network's member to a published port of the network (hairpin, bridged by br_netfilter): from the bridge's address",
		append(ctStatusDNAT(), metaLoad(expr.MetaKeyIIF, 1), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}},
			&expr.Fib{Register: 1, ResultADDRTYPE: true, FlagSADDR: true},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1}, metaLoad(expr.MetaKeyOIF, 9), lookup(SetSame, 1, false), &expr.Masq{})...)
	rule("the host's 127.0.0.1 to a published port: from the host end's address",
		append(ctStatusDNAT(), metaLoad(expr.MetaKeyNFPROTO, 1), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127}},
			metaLoad(expr.MetaKeyOIF, 1), lookup(SetLinks, 1, false), &expr.Masq{})...)
}

// reversePathMissing drops a packet whose source the host does not route
// back out of the interface it came in by (fib saddr . iif oif missing:
// what rp_filter=1 does).
func reversePathMissing() []expr.Any {
	return []expr.Any{&expr.Fib{Register: 1, ResultOIF: true, FlagSADDR: true, FlagIIF: true, FlagPRESENT: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}},
		verdict(expr.VerdictDrop, "")}
}

// loopbackFromLink matches IPv4 packets to 127.0.0.0/8 from a link.
func loopbackFromLink() []expr.Any {
	return append(toLoopback(), metaLoad(expr.MetaKeyIIF, 1), lookup(SetLinks, 1, false))
}

// toLoopback matches IPv4 packets to 127.0.0.0/8.
func toLoopback() []expr.Any {
	return []expr.Any{metaLoad(expr.MetaKeyNFPROTO, 1), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127}}}
}

// ICMPv6 types (RFC 4861), not in x/sys.
const (
	ndRouterAdvert = 134
	ndRedirect     = 137
)

// ipsDstNAT is IPS_DST_NAT (linux/netfilter/nf_conntrack_common.h), not in
// x/sys: the connection's destination was translated.
const ipsDstNAT = 1 << 5

// ctStateTracked matches packets of a connection conntrack tracks (ct
// state new, established or related): the NAT hooks see only those, so an
// invalid packet (a TCP segment out of window, one of a connection whose
// entry was just deleted) or an untracked one (notrack in someone's raw
// chain) that was forwarded would leave with its private source.
func ctStateTracked() []expr.Any {
	return ctState(expr.CtStateBitNEW | expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED)
}

// ctState matches packets whose conntrack state is one of bits.
func ctState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// ctStatusDNAT matches packets of connections whose destination was
// translated (by a published port).
func ctStatusDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// publishedDNAT is, for family fam,
//
//	meta nfproto ipv4 ct mark set ip daddr . meta l4proto . th dport map @port_links
//	dnat ip to ip daddr . meta l4proto . th dport map @ports
//
// (with ip6 and the maps ports6, port_links6 for IPv6) in one rule: the
// connection is marked with the host end's index (for Close and
// Unpublish: see flows.Forget) and its destination translated to the
// namespace's address and port. The key is laid out as nft lays out a
// concatenation, each field in 32-bit registers from register 1: an IPv4
// address takes 1 and the protocol and port 9 and 10; an IPv6 address
// takes the four words of register 1 (8 to 11), and the protocol and port
// 12 and 13. The mark goes to the next register, the translation to 1
// (address) and the register after the address (port).
func publishedDNAT(fam byte) []expr.Any {
	off, size, proto, port := uint32(16), uint32(4), uint32(9), uint32(10)
	s, m := ByName[SetPorts], ByName[SetPortLinks]
	if fam == unix.NFPROTO_IPV6 {
		off, size, proto, port = 24, 16, 12, 13
		s, m = ByName[SetPorts6], ByName[SetPortLinks6]
	}
	mark := port + 1
	return append(isFamily(fam),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size},
		metaLoad(expr.MetaKeyL4PROTO, proto),
		&expr.Payload{DestRegister: port, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, DestRegister: mark, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
		&expr.Ct{Key: expr.CtKeyMARK, Register: mark, SourceRegister: true},
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: s.Name, SetID: s.ID},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(fam), RegAddrMin: 1, RegAddrMax: 1,
			RegProtoMin: proto, RegProtoMax: proto, Specified: true})
}
