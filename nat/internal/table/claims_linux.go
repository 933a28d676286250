package table

import (
	"encoding/binary"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/netns"
)

// Claim is an entry of the claims maps: a live link's prefix with its
// owner mark, or (Cover) a prefix containing one.
type Claim struct {
	Prefix netip.Prefix
	Mark   string
	Cover  bool
}

// Holder names the link of a claim, from its mark ("link=NAME").
func (c Claim) Holder() string {
	for _, f := range strings.Fields(c.Mark) {
		if name, ok := strings.CutPrefix(f, "link="); ok {
			return "link " + name
		}
	}
	return "a link"
}

// ReadClaims reads the claims maps, IPv4's and IPv6's.
func ReadClaims(c *nftables.Conn) ([]Claim, error) {
	var out []Claim
	for _, set := range []string{nftset.SetClaims, nftset.SetClaims6} {
		els, err := c.GetSetElements(nftset.ByName[set])
		if err != nil {
			return nil, err
		}
		for _, e := range els {
			p, ok := nftset.ClaimPrefix(e.Key)
			if !ok || len(e.Val) != 4 || nftset.ClaimSet(p) != set {
				continue
			}
			out = append(out, Claim{Prefix: p, Mark: e.Comment, Cover: binary.NativeEndian.Uint32(e.Val) == 0})
		}
	}
	return out, nil
}

// DropStaleCovers removes the covers of claims (see nftset.Entries.Covers)
// that contain no claim any more, in a transaction that commits only if
// nothing committed since they were read: a Connect adding a claim
// meanwhile may need one of them.
func DropStaleCovers(c *nftables.Conn, raw *netlink.Conn) error {
	gen, err := nftset.RuleGeneration(raw)
	if err != nil {
		return err
	}
	claims, err := ReadClaims(c)
	if err != nil {
		return err
	}
	needed := map[netip.Prefix]bool{}
	for _, cl := range claims {
		if !cl.Cover {
			for _, cv := range (nftset.Entries{Prefixes: []netip.Prefix{cl.Prefix}}).Covers() {
				p, _ := nftset.ClaimPrefix(cv.Key)
				needed[p] = true
			}
		}
	}
	var stale []nftset.Elem
	for _, cl := range claims {
		if cl.Cover && !needed[cl.Prefix] {
			stale = append(stale, nftset.ClaimElem(cl.Prefix))
		}
	}
	if len(stale) == 0 {
		return nil
	}
	b := nftset.Batch{Gen: &gen}
	if err := b.Del(stale, true); err != nil {
		return err
	}
	if err := b.Commit(raw); err != nil && err != nftset.ErrGenChanged {
		return err // (changed: the next Sweep tries again)
	}
	return nil
}

// DropCovers removes the covers of prefixes (closed links' claims, just
// removed) that no other claim needs any more, so that a Close leaves no
// entry of its link behind; covers other claims need stay. A cover of p
// with k bits is needed by another claim exactly when one lies in it
// outside p, that is, inside one of the siblings on the way down from it
// to p (the other half at each length); and a claim lies inside a sibling
// exactly when the sibling is there, as a claim or as one of that claim's
// covers. So one look at each sibling, in one round trip, decides, and the
// removal commits only at the generation read with them: a claim added
// meanwhile keeps its covers. Many prefixes (a CloseAll) are checked
// against all claims read at once instead (DropStaleCovers). A ruleset
// that keeps changing leaves them (a stale cover is removed when it is in
// the way, or with the table).
func (t *Host) DropCovers(host *netns.Handle, prefixes []netip.Prefix) error {
	if len(prefixes) == 0 {
		return nil
	}
	err := t.withRaw(host, func(c *netlink.Conn) error { return t.dropCovers(host, c, prefixes) })
	if nftset.IsENOENT(err) {
		return nil // the table is gone, and its covers with it
	}
	return err
}

func (t *Host) dropCovers(host *netns.Handle, c *netlink.Conn, prefixes []netip.Prefix) error {
	if len(prefixes) > 8 {
		return t.WithNFT(host, func(nc *nftables.Conn) error { return DropStaleCovers(nc, c) })
	}
	for attempt := 0; attempt < 3; attempt++ {
		gen, stale, err := staleCovers(c, prefixes)
		if err != nil || len(stale) == 0 {
			return err
		}
		Hook("close covers") // (tests: a claim added meanwhile)
		b := nftset.Batch{Gen: &gen}
		if err := b.Del(stale, true); err != nil {
			return err
		}
		if err := b.Commit(c); err != nftset.ErrGenChanged {
			return err
		}
	}
	return nil
}

// staleCovers finds the covers of prefixes that no other claim needs (see
// DropCovers), and the generation they were read at. The siblings are
// looked at from the nearest out, the first four of each prefix, then the
// rest of those still going: most prefixes have a neighbour near them (the
// pool hands out neighbours), and the first look settles them. (A round
// trip costs about as much as four looks.)
func staleCovers(c *netlink.Conn, prefixes []netip.Prefix) (gen uint32, stale []nftset.Elem, err error) {
	next := make([]int, len(prefixes)) // the length of each prefix's next sibling; 0: done
	for i, p := range prefixes {
		next[i] = p.Bits()
	}
	first := true
	for n := 4; ; n = 128 {
		var siblings []nftset.Elem
		var of []int
		for i, p := range prefixes {
			for bits := next[i]; bits > nftset.MinBits(p) && bits > next[i]-n; bits-- {
				siblings = append(siblings, nftset.ClaimElem(netip.PrefixFrom(flipBit(p.Masked().Addr(), bits-1), bits).Masked()))
				of = append(of, i)
			}
		}
		if len(siblings) == 0 {
			return gen, stale, nil
		}
		g, there, err := nftset.ExistAt(c, siblings)
		if err != nil {
			return 0, nil, err
		}
		if first {
			gen, first = g, false // (later reads are checked by the commit at gen)
		}
		for j, i := range of {
			if next[i] == 0 {
				continue
			}
			if there[j] {
				next[i] = 0 // this cover and the larger ones are needed
				continue
			}
			p := prefixes[i]
			stale = append(stale, nftset.ClaimElem(netip.PrefixFrom(p.Addr(), next[i]-1).Masked()))
			if next[i]--; next[i] == nftset.MinBits(p) {
				next[i] = 0
			}
		}
	}
}

// flipBit flips bit i (0: the first, most significant) of a.
func flipBit(a netip.Addr, i int) netip.Addr {
	b := a.AsSlice()
	b[i/8] ^= 0x80 >> (i % 8)
	out, _ := netip.AddrFromSlice(b)
	return out
}
