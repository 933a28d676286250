package nat

// Persistent links (Config.Persistent) outlive the process that made them,
// for programs that set a namespace up and exit, as CNI plugins do. Their
// marks name the persistent owner, which every process takes for live, so
// Sweep and other processes' Connects never remove them; any process
// removes one with Remove, from the kernel's record of it (the set
// entries' comments, the host end's ifalias), since the process that made
// it is gone. The persistent owner shares an uplink's forwarding as any
// owner does, with one entry per uplink and family in the uplinks set while
// at least one persistent link leaves by it.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/nsnet/nsnet/nat/internal/flows"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"os"
	"slices"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/netns"
)

// persistentEntryMark is the comment of a persistent link's set entries
// (and, with the tag, its host end's ifalias).
func persistentEntryMark(hostVeth, tag string) string {
	m := owner.Persistent
	m.Link, m.Tag = hostVeth, tag
	return m.String()
}

// persistentMark reads a persistent link's mark; ok is false for any other.
func persistentMark(comment string) (m owner.Mark, ok bool) {
	m, ok = owner.Parse(comment)
	return m, ok && m.ID == owner.PersistentID
}

// isPersistent tells a mark of a persistent link.
func isPersistent(mark string) bool {
	_, ok := persistentMark(mark)
	return ok
}

// addPersistent adds the entries of a new persistent link and, for the
// first persistent link out of an uplink in a family, the persistent
// owner's share of the uplink's forwarding (as register does for a
// process), under the host lock.
func (hs *hostState) addPersistent(ctx context.Context, host *netns.Handle, hc *nl.Conn, e nftset.Entries) error {
	return owner.WithHostLock(ctx, host, func() error {
		_, err := hs.shareUplinks(host, hc, e, upKeys(e), owner.Persistent, true)
		return err
	})
}

// removePersistent removes the persistent link whose host end was called
// hostVeth at Connect (index, if not 0, is its interface index, if it is
// still there): the pair, its connections, its set entries, and the
// persistent owner's share of an uplink's forwarding when no persistent
// link leaves by it any more. found says whether anything of it was there.
func removePersistent(ctx context.Context, host *netns.Handle, index int, hostVeth string) (found bool, err error) {
	hc, err := nl.Dial(host)
	if err != nil {
		return false, err
	}
	defer hc.Close()
	var errs []error
	if index != 0 {
		gone, err := quiesce(host, hc, []int{index}, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("veth: %w", err))
		} else if !gone[0] {
			found = true
		}
		if err := flows.Forget(host, index); err != nil {
			errs = append(errs, fmt.Errorf("conntrack: %w", err))
		}
	}
	err = owner.WithHostLock(ctx, host, func() error {
		f, err := dropPersistentEntries(host, hc, hostVeth)
		found = found || f
		return err
	})
	if err != nil {
		errs = append(errs, err)
	}
	return found, errors.Join(errs...)
}

// dropPersistentEntries removes the set entries of the persistent link
// hostVeth, and the persistent owner's uplinks entries (and the uplink's
// forwarding, when no other owner uses it) that no persistent link needs
// any more; the table too, when nothing is left in it. It runs under the
// host lock.
func dropPersistentEntries(host *netns.Handle, hc *nl.Conn, hostVeth string) (found bool, err error) {
	c, err := nftConn(host)
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
		if nftset.IsENOENT(err) || errors.Is(err, ErrForeignTable) {
			return false, nil
		}
		return false, err
	}
	mine := func(comment string) bool {
		m, ok := persistentMark(comment)
		return ok && m.Link == hostVeth
	}
	var gone []nftset.Elem
	left := map[upKey]bool{} // uplink forwardings other persistent links use
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
			case set == nftset.SetEgress && isPersistent(x.Comment) && len(x.Key) >= 12:
				left[upKey{int(binary.NativeEndian.Uint32(x.Key[4:8])), x.Key[8]}] = true
			}
		}
	}
	if len(gone) == 0 {
		return false, nil
	}
	users, err := readUplinkUsers(c, upKey{})
	if err != nil {
		return true, err
	}
	live, err := owner.Live(host, ownerIDs(users))
	if err != nil {
		return true, err
	}
	var errs []error
	for _, u := range users {
		if u.owner != owner.PersistentID || left[u.uplink] {
			continue
		}
		gone = append(gone, u.elem())
		others := false
		for _, v := range users {
			others = others || (v.uplink == u.uplink && v.owner != owner.PersistentID && live[v.owner])
		}
		if others || !u.origOff {
			continue
		}
		if _, err := giveBack(host, hc, u.uplink); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("uplink forwarding (%s): %w", nftset.FamilyName(u.uplink.fam), err))
		}
		gone = append(gone, openedElem(u.uplink))
	}
	var b nftset.Batch
	if err := b.Del(gone, true); err != nil {
		return true, err
	}
	if err := b.Commit(raw); err != nil && !nftset.IsENOENT(err) {
		errs = append(errs, fmt.Errorf("set entries: %w", err))
	}
	if len(errs) == 0 {
		socks := idleSockets{nft: []*nftables.Conn{c}, raw: []*netlink.Conn{raw}}
		dropTable(host, &socks, nil)
	}
	return true, errors.Join(errs...)
}

// sysRemove is Remove on Linux.
func sysRemove(ctx context.Context, hostNS *netns.Handle, hostVeth string) error {
	if err := nl.CheckIfName(hostVeth); err != nil {
		return err
	}
	host, err := openHost(hostNS)
	if err != nil {
		return err
	}
	defer host.Close()
	hc, err := nl.Dial(host)
	if err != nil {
		return err
	}
	defer hc.Close()
	// The link by the table's record of it (its index: a rename does not
	// change it), else by its name.
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
		return int(link.Index), link.Attributes.Alias != nil && isPersistent(*link.Attributes.Alias), nil
	}
	index := 0
	recorded := recordedIndex(host, hostVeth)
	if recorded != 0 {
		if i, ok, err := persistentAt(nl.GetLinkByIndex(recorded)); err != nil {
			return err
		} else if ok {
			index = i
		}
	}
	if index == 0 {
		i, ok, err := persistentAt(nl.GetLinkByName(hostVeth))
		switch {
		case err != nil:
			return err
		case i != 0 && !ok && recorded == 0:
			return fmt.Errorf("%w: link %s is not a persistent nsnet link", ErrInvalidConfig, hostVeth)
		case ok:
			index = i
		}
	}
	found, err := removePersistent(ctx, host, index, hostVeth)
	if err == nil && !found {
		err = fmt.Errorf("persistent link %s: %w", hostVeth, os.ErrNotExist)
	}
	return err
}

// recordedIndex is the interface index the table records for the
// persistent link hostVeth (its links entry), 0 if none.
func recordedIndex(host *netns.Handle, hostVeth string) int {
	c, err := nftConn(host)
	if err != nil {
		return 0
	}
	defer c.CloseLasting()
	els, err := c.GetSetElements(nftset.ByName[nftset.SetLinks])
	if err != nil {
		return 0
	}
	for _, x := range els {
		if m, ok := persistentMark(x.Comment); ok && m.Link == hostVeth && len(x.Key) == 4 {
			return int(binary.NativeEndian.Uint32(x.Key))
		}
	}
	return 0
}

// sysPersistentLinks is PersistentLinks on Linux.
func sysPersistentLinks(hostNS *netns.Handle) ([]PersistentLink, error) {
	host, err := openHost(hostNS)
	if err != nil {
		return nil, err
	}
	defer host.Close()
	c, err := nftConn(host)
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
		if link, err := nl.DecodeLink(m.Data); err == nil && link.Attributes.Alias != nil && isPersistent(*link.Attributes.Alias) {
			up[int(link.Index)] = true
		}
	}
	var out []PersistentLink
	for _, x := range els {
		m, ok := persistentMark(x.Comment)
		if !ok || len(x.Key) != 4 {
			continue
		}
		pl := PersistentLink{Index: int(binary.NativeEndian.Uint32(x.Key)), HostVeth: m.Link, Tag: m.Tag}
		pl.Up = up[pl.Index]
		out = append(out, pl)
	}
	return out, nil
}
