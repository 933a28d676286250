package sweep

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/naterr"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/nat/internal/table"
	"github.com/nsnet/nsnet/nat/internal/uplinks"
	"github.com/nsnet/nsnet/netns"
)

// persistent tells a mark of a persistent link.
func persistent(mark string) bool {
	_, ok := owner.ParsePersistent(mark)
	return ok
}

// Persistent removes the set entries of the persistent link
// hostVeth, and the persistent owner's uplinks entries (and the uplink's
// forwarding, when no other owner uses it) that no persistent link needs
// any more; the table too, when nothing is left in it. It runs under the
// host lock.
func Persistent(host *netns.Handle, hc *nl.Conn, hostVeth string) (found bool, err error) {
	c, err := table.NFTConn(host)
	if err != nil {
		return false, err
	}
	defer c.CloseLasting()
	raw, err := nftset.DialNFT(host)
	if err != nil {
		return false, err
	}
	defer func() { raw.Close() }()
	if err := nftset.OwnTable(c); err != nil {
		if nftset.IsENOENT(err) || errors.Is(err, nftset.ErrForeignTable) {
			return false, nil
		}
		return false, err
	}
	mine := func(comment string) bool {
		m, ok := owner.ParsePersistent(comment)
		return ok && m.Link == hostVeth
	}
	var gone []nftset.Elem
	left := map[uplinks.Key]bool{} // uplink forwardings other persistent links use
	for _, set := range append(slices.Clone(nftset.LinkSets), nftset.SetClaims, nftset.SetClaims6) {
		els, err := c.GetSetElements(nftset.ByName[set])
		if nftset.IsENOENT(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("set %s: %w", set, err)
		}
		for _, x := range els {
			switch {
			case mine(x.Comment):
				gone = append(gone, nftset.Elem{Set: set, Key: x.Key})
			case set == nftset.SetEgress && persistent(x.Comment) && len(x.Key) >= 12:
				left[uplinks.Key{Index: int(binary.NativeEndian.Uint32(x.Key[4:8])), Fam: x.Key[8]}] = true
				if x.Key[8] == uplinks.GlobalV6.Fam {
					left[uplinks.GlobalV6] = true // (its users, where IPv6 is forwarded so)
				}
			}
		}
	}
	if len(gone) == 0 {
		return false, nil
	}
	users, err := uplinks.ReadUsers(c, uplinks.Key{})
	if err != nil {
		return true, err
	}
	live, err := owner.Live(host, uplinks.OwnerIDs(users))
	if err != nil {
		return true, err
	}
	var errs []error
	for _, u := range users {
		if u.Owner != owner.PersistentID || left[u.Uplink] {
			continue
		}
		gone = append(gone, u.Elem())
		others := false
		for _, v := range users {
			others = others || (v.Uplink == u.Uplink && v.Owner != owner.PersistentID && live[v.Owner])
		}
		if others || !u.OrigOff {
			continue
		}
		var records []nftset.Elem
		if u.Uplink.Global() {
			if records, err = uplinks.ReadGlobalRecords(c); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if _, err := uplinks.GiveBack(host, hc, u.Uplink, records); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("uplink forwarding (%s): %w", nftset.FamilyName(u.Uplink.Fam), err))
		}
		if len(records) > 0 {
			gone = append(gone, records...)
		} else {
			gone = append(gone, uplinks.OpenedElem(u.Uplink))
		}
	}
	var b nftset.Batch
	if err := b.Del(gone, true); err != nil {
		return true, err
	}
	if err := b.Commit(raw); err != nil && !nftset.IsENOENT(err) {
		errs = append(errs, fmt.Errorf("set entries: %w", err))
	} else if err := table.DropStaleCovers(c, raw); err != nil && !nftset.IsENOENT(err) {
		errs = append(errs, fmt.Errorf("claims' covers: %w", err)) // (its claims' covers no other needs)
	}
	if len(errs) == 0 {
		socks := table.Idle{NFT: []*nftables.Conn{c}, Raw: []*netlink.Conn{raw}}
		table.Drop(host, &socks, nil)
	}
	return true, errors.Join(errs...)
}

// RecordedIndex is the interface index the table records for the
// persistent link hostVeth (its links entry), 0 if none.
func RecordedIndex(host *netns.Handle, hostVeth string) int {
	c, err := table.NFTConn(host)
	if err != nil {
		return 0
	}
	defer c.CloseLasting()
	els, err := c.GetSetElements(nftset.ByName[nftset.SetLinks])
	if err != nil {
		return 0
	}
	for _, x := range els {
		if m, ok := owner.ParsePersistent(x.Comment); ok && m.Link == hostVeth && len(x.Key) == 4 {
			return int(binary.NativeEndian.Uint32(x.Key))
		}
	}
	return 0
}

// Link is a persistent link as the table records it (nat.PersistentLink is
// it, field for field).
type Link struct {
	HostVeth string // the host end's name at Connect
	Index    int    // the host end's interface index
	Tag      string // Config.Tag
	Up       bool   // the host end is there
}

// PersistentLinks lists the persistent links of host from the table's
// links set, each with whether its host end is still there.
func PersistentLinks(host *netns.Handle) ([]Link, error) {
	c, err := table.NFTConn(host)
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	els, err := c.GetSetElements(nftset.ByName[nftset.SetLinks])
	if nftset.IsENOENT(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("set %s: %w", nftset.SetLinks, err)
	}
	hc, err := nl.Dial(host)
	if err != nil {
		return nil, err
	}
	defer hc.Close()
	// The host's persistent host ends, with one dump: a GC looks at every
	// link, where a query each would cost a round trip per container.
	msgs, err := hc.Dump(nl.DumpLinks())
	if err != nil {
		return nil, err
	}
	up := map[int]bool{}
	for _, m := range msgs {
		if link, err := nl.DecodeLink(m.Data); err == nil && link.Attributes.Alias != nil && persistent(*link.Attributes.Alias) {
			up[int(link.Index)] = true
		}
	}
	var out []Link
	for _, x := range els {
		m, ok := owner.ParsePersistent(x.Comment)
		if !ok || len(x.Key) != 4 {
			continue
		}
		pl := Link{Index: int(binary.NativeEndian.Uint32(x.Key)), HostVeth: m.Link, Tag: m.Tag}
		pl.Up = up[pl.Index]
		out = append(out, pl)
	}
	return out, nil
}

// PersistentIndex finds the host end of the persistent link hostVeth: by
// the table's record of it (its index: a rename does not change it), else
// by its name; 0 if it is gone. A link of that name that is not a
// persistent nsnet link is an error (naterr.ErrInvalidConfig).
func PersistentIndex(host *netns.Handle, hc *nl.Conn, hostVeth string) (int, error) {
	persistentAt := func(q nl.Request) (int, bool, error) {
		msgs, err := hc.Query(q)
		if errors.Is(err, os.ErrNotExist) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, err
		}
		link, err := nl.DecodeLink(msgs[0].Data)
		if err != nil {
			return 0, false, err
		}
		return int(link.Index), link.Attributes.Alias != nil && persistent(*link.Attributes.Alias), nil
	}
	recorded := RecordedIndex(host, hostVeth)
	if recorded != 0 {
		if i, ok, err := persistentAt(nl.GetLinkByIndex(recorded)); err != nil || ok {
			return i, err
		}
	}
	i, ok, err := persistentAt(nl.GetLinkByName(hostVeth))
	switch {
	case err != nil:
		return 0, err
	case i != 0 && !ok && recorded == 0:
		return 0, fmt.Errorf("%w: link %s is not a persistent nsnet link", naterr.ErrInvalidConfig, hostVeth)
	case ok:
		return i, nil
	}
	return 0, nil
}
