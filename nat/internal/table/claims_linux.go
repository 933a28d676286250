package table

import (
	"encoding/binary"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/nat/internal/nftset"
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
			stale = append(stale, nftset.Elem{Set: nftset.ClaimSet(cl.Prefix), Key: nftset.ClaimKey(cl.Prefix)})
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
