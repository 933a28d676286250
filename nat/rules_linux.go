package nat

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Set names. Per-link state lives in these sets, so the rules — and the
// work every packet does — stay the same however many links there are.
const (
	setLinks    = "links"    // ifname: host ends of our veths
	setMasq     = "masq"     // ipv4_addr . ifname (interval): prefix . uplink
	setSiblings = "siblings" // ifname: links that may talk to each other
	setFwd      = "fwd"      // ifname . pid: processes using an uplink's forwarding
)

// Fixed set IDs: google/nftables draws them from a package-level counter
// that races between Conns; within one transaction they only need to be
// distinct.
const (
	idLinks uint32 = iota + 1
	idMasq
	idSiblings
	idFwd
)

var (
	table      = &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName}
	addrIfname = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIFName)
	// ifnameDotPID keys the fwd set: an uplink's name and a process id,
	// stored in a 4-byte field (typed ipv4_addr only for its size).
	ifnameDotPID = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)
	sets         = []*nftables.Set{
		{Table: table, Name: setLinks, ID: idLinks, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian, Comment: "nsnet: host ends"},
		{Table: table, Name: setMasq, ID: idMasq, KeyType: addrIfname, Interval: true, Concatenation: true, Comment: "nsnet: prefix . uplink"},
		{Table: table, Name: setSiblings, ID: idSiblings, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian, Comment: "nsnet: links that may reach each other"},
		{Table: table, Name: setFwd, ID: idFwd, KeyType: ifnameDotPID, Concatenation: true, Comment: "nsnet: uplink forwarding users"},
	}
	setByName = func() map[string]*nftables.Set {
		m := map[string]*nftables.Set{}
		for _, s := range sets {
			m[s.Name] = s
		}
		return m
	}()
)

func comment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, "nsnet: "+s) }

// ifname pads an interface name to the 16 bytes (IFNAMSIZ) that meta
// iifname/oifname load and sets of type ifname hold.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func metaLoad(key expr.MetaKey, reg uint32) *expr.Meta { return &expr.Meta{Key: key, Register: reg} }

func lookup(set string, reg uint32, invert bool) *expr.Lookup {
	s := setByName[set]
	return &expr.Lookup{SourceRegister: reg, SetName: s.Name, SetID: s.ID, Invert: invert}
}

func verdict(k expr.VerdictKind, chain string) *expr.Verdict {
	return &expr.Verdict{Kind: k, Chain: chain}
}

// saddrDotIf loads "ip saddr . {iif,oif}name" into registers 1 and 9, the
// layout nft uses for a concatenation (4 bytes of address in the first
// 32-bit register, the 16-byte name in the next four).
func saddrDotIf(key expr.MetaKey) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		metaLoad(key, 9),
	}
}

// addSkeleton queues the table, its sets, chains and rules:
//
//	table ip nsnet {
//	  set links, masq, siblings, fwd (see above)
//	  chain forward { type filter hook forward priority filter; policy accept;
//	    iifname @links jump from_link
//	    oifname @links jump to_link }
//	  chain from_link {
//	    fib saddr . iif oif missing drop      # spoofed source
//	    iifname @siblings oifname @siblings accept
//	    oifname @links drop                   # another link: isolated
//	    accept }
//	  chain to_link {
//	    ct state established,related accept
//	    drop }                                # nothing unsolicited
//	  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//	    ip saddr . oifname @masq masquerade }
//	}
//
// Packets of other interfaces match neither jump in forward and leave the
// table after two set lookups, untouched. The spoofing check is a strict
// reverse-path lookup, as rp_filter=1 does: a source passes only if the
// host routes it back out of the link it came in by, which the link's
// prefix is (its address on the host end makes that route). It costs one
// FIB lookup per packet however many links there are, where a set of
// prefix . link entries cost a lookup that grows with them, and one more
// set to rewrite on every Connect.
func addSkeleton(c *nftables.Conn) error {
	c.CreateTable(table)
	for _, s := range sets {
		if err := c.AddSet(s, nil); err != nil {
			return err
		}
	}
	accept := nftables.ChainPolicyAccept
	forward := c.AddChain(&nftables.Chain{
		Name: "forward", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	fromLink := c.AddChain(&nftables.Chain{Name: "from_link", Table: table})
	toLink := c.AddChain(&nftables.Chain{Name: "to_link", Table: table})
	post := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept,
	})
	rule := func(ch *nftables.Chain, why string, e ...expr.Any) {
		c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: e, UserData: comment(why)})
	}
	rule(forward, "from a connected namespace",
		metaLoad(expr.MetaKeyIIFNAME, 1), lookup(setLinks, 1, false), verdict(expr.VerdictJump, "from_link"))
	rule(forward, "to a connected namespace",
		metaLoad(expr.MetaKeyOIFNAME, 1), lookup(setLinks, 1, false), verdict(expr.VerdictJump, "to_link"))

	rule(fromLink, "source not routed back out of the link",
		&expr.Fib{Register: 1, ResultOIF: true, FlagSADDR: true, FlagIIF: true, FlagPRESENT: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}},
		verdict(expr.VerdictDrop, ""))
	rule(fromLink, "siblings allowed",
		metaLoad(expr.MetaKeyIIFNAME, 1), lookup(setSiblings, 1, false),
		metaLoad(expr.MetaKeyOIFNAME, 1), lookup(setSiblings, 1, false), verdict(expr.VerdictAccept, ""))
	rule(fromLink, "another connected namespace",
		metaLoad(expr.MetaKeyOIFNAME, 1), lookup(setLinks, 1, false), verdict(expr.VerdictDrop, ""))
	rule(fromLink, "out", verdict(expr.VerdictAccept, ""))

	rule(toLink, "replies",
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		verdict(expr.VerdictAccept, ""))
	rule(toLink, "unsolicited", verdict(expr.VerdictDrop, ""))

	rule(post, "masquerade out of the uplink",
		append(saddrDotIf(expr.MetaKeyOIFNAME), lookup(setMasq, 1, false), &expr.Masq{})...)
	return nil
}

// elements are the set entries of one link.
type elements struct {
	links, siblings, masq []nftables.SetElement
}

// rangeKey is the start and inclusive end of prefix, each followed by the
// interface name: the element of a concatenated interval set (pipapo takes
// the end as the last address, not one past it).
func rangeKey(p netip.Prefix, name string) nftables.SetElement {
	first, last := p.Masked().Addr().As4(), lastAddr(p.Masked()).As4()
	n := ifname(name)
	return nftables.SetElement{
		Key:    append(first[:], n...),
		KeyEnd: append(last[:], n...),
	}
}

// linkElements are the set entries of one link, each commented with the
// owner mark, for Sweep.
func linkElements(prefix netip.Prefix, hostVeth, uplink, owner string, siblings bool) elements {
	mark := func(e nftables.SetElement) nftables.SetElement { e.Comment = owner; return e }
	e := elements{
		links: []nftables.SetElement{mark(nftables.SetElement{Key: ifname(hostVeth)})},
		masq:  []nftables.SetElement{mark(rangeKey(prefix, uplink))},
	}
	if siblings {
		e.siblings = []nftables.SetElement{mark(nftables.SetElement{Key: ifname(hostVeth)})}
	}
	return e
}

// add appends o's entries to e's, for one transaction covering many links.
func (e *elements) add(o elements) {
	e.links = append(e.links, o.links...)
	e.masq = append(e.masq, o.masq...)
	e.siblings = append(e.siblings, o.siblings...)
}

func (e elements) empty() bool {
	return len(e.links)+len(e.masq)+len(e.siblings) == 0
}

func (e elements) apply(c *nftables.Conn, add bool) error {
	op := c.SetAddElements
	if !add {
		op = c.SetDeleteElements
	}
	for _, x := range []struct {
		set string
		els []nftables.SetElement
	}{{setLinks, e.links}, {setMasq, e.masq}, {setSiblings, e.siblings}} {
		if len(x.els) == 0 {
			continue
		}
		if err := op(setByName[x.set], x.els); err != nil {
			return fmt.Errorf("set %s: %w", x.set, err)
		}
	}
	return nil
}
