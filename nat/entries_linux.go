package nat

// A link's entries in the library's sets: added with Connect and AddRules,
// removed with Close, with the uplink's share of forwarding for the first
// and last of a process's links out of it (see protocol_linux.go).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"os"
	"slices"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// addLink adds the entries e of a new link in one transaction. The first
// of this process's links out of an uplink (in a family) also registers
// the process as a user of the uplink's forwarding of that family (see
// protocol_linux.go), in the same transaction, and then turns that
// forwarding on.
func (hs *hostState) addLink(ctx context.Context, host *netns.Handle, hc *nl.Conn, e nftset.Entries) error {
	keys := upKeys(e)
	refs := make([]*uplinkRef, len(keys))
	registered := true
	hs.mu.Lock()
	for i, k := range keys {
		ref := hs.uplinks[k]
		if ref == nil {
			ref = &uplinkRef{}
			hs.uplinks[k] = ref
		}
		ref.users++
		refs[i] = ref
		registered = registered && ref.registered
	}
	hs.mu.Unlock()
	var err error
	if registered {
		err = hs.addEntries(host, e, nil)
	} else {
		err = owner.WithHostLock(ctx, host, func() error { return hs.register(host, hc, e, keys, refs) })
	}
	if err != nil {
		hs.mu.Lock()
		for i, k := range keys {
			if refs[i].users--; refs[i].users == 0 && !refs[i].registered {
				delete(hs.uplinks, k)
			}
		}
		hs.mu.Unlock()
	}
	return err
}

// addEntries commits e's entries, exclusively (a claim overlapping
// another, a host end already in links: EEXIST), with its covers and the
// uplinks changes extra; a refusal says which entry is in the way.
func (hs *hostState) addEntries(host *netns.Handle, e nftset.Entries, extra func(*nftset.Batch) error) error {
	for attempt := 0; ; attempt++ {
		var b nftset.Batch
		if err := b.Add(e.Elems(), true); err != nil {
			return err
		}
		if err := b.Add(e.Covers(), false); err != nil {
			return err
		}
		if extra != nil {
			if err := extra(&b); err != nil {
				return err
			}
		}
		err := hs.commitEntries(host, &b)
		if !errors.Is(err, unix.EEXIST) {
			return err
		}
		if err = hs.inTheWay(host, e, err); err != errStaleCover || attempt == 3 {
			return err
		}
	}
}

// errStaleCover says that what refused a claim was only a cover left by
// closed links, now removed: try again.
var errStaleCover = errors.New("a stale cover was in the way")

// inTheWay explains an EEXIST from adding e: a claim of another link that
// overlaps e's prefix (ErrOverlap naming it; also errDeadHolder when its
// owner is dead), e's host end already there (os.ErrExist), or a cover
// that no claim needs any more, which it removes (errStaleCover).
func (hs *hostState) inTheWay(host *netns.Handle, e nftset.Entries, err error) error {
	c, cerr := hs.nft(host)
	if cerr != nil {
		return err
	}
	defer func() { hs.putNFT(c, cerr) }()
	raw, cerr := nftset.DialNFT(host)
	if cerr != nil {
		return err
	}
	defer raw.Close()
	gen, cerr := nftset.RuleGeneration(raw)
	if cerr != nil {
		return err
	}
	var claims []claim
	if claims, cerr = readClaims(c); cerr != nil {
		return err
	}
	for _, cl := range claims {
		if cl.cover || !slices.ContainsFunc(e.Prefixes, cl.prefix.Overlaps) {
			continue
		}
		o, ok := owner.Parse(cl.mark)
		if !ok {
			return fmt.Errorf("%w: %v is claimed (%s)", ErrOverlap, cl.prefix, cl.mark)
		}
		live, lerr := owner.Live(host, []string{o.ID})
		if lerr == nil && !live[o.ID] {
			return fmt.Errorf("%w: %v is held by %s, %w", ErrOverlap, cl.prefix, cl.holder(), errDeadHolder)
		}
		return fmt.Errorf("%w: %v is used by %s of live pid %d", ErrOverlap, cl.prefix, cl.holder(), o.PID)
	}
	for _, cl := range claims {
		if cl.cover && slices.Contains(e.Prefixes, cl.prefix) {
			// No claim inside it: closed links' cover. Removed only if
			// nothing committed since the claims were read.
			b := nftset.Batch{Gen: &gen}
			if derr := b.Del([]nftset.Elem{{Set: nftset.ClaimSet(cl.prefix), Key: nftset.ClaimKey(cl.prefix)}}, true); derr != nil {
				return derr
			}
			if derr := b.Commit(raw); derr != nil && derr != nftset.ErrGenChanged {
				return derr
			}
			return errStaleCover
		}
	}
	for _, pm := range e.Ports {
		ports, links := pm.Sets()
		if els, gerr := c.GetSetElements(nftset.ByName[links]); gerr == nil {
			for _, x := range els {
				if bytes.Equal(x.Key, pm.Key()) {
					return fmt.Errorf("%v published already (%s): %w", pm, x.Comment, os.ErrExist)
				}
			}
		}
		if els, gerr := c.GetSetElements(nftset.ByName[ports]); gerr == nil {
			for _, x := range els {
				if bytes.Equal(x.Key, pm.Key()) {
					return fmt.Errorf("%v published already: %w", pm, os.ErrExist)
				}
			}
		}
	}
	return fmt.Errorf("interface index %d already has nsnet entries: %w", e.Link, os.ErrExist)
}

// uplinkUsers reads the uplinks entries of one uplink's family; none if
// the table is missing (it is made again with the entries).
func (hs *hostState) uplinkUsers(host *netns.Handle, uplink upKey) ([]uplinkUser, error) {
	c, err := hs.nft(host)
	if err != nil {
		return nil, err
	}
	users, err := readUplinkUsers(c, uplink)
	hs.putNFT(c, err)
	if nftset.IsENOENT(err) {
		hs.tableGone()
		return nil, nil
	}
	return users, err
}

// errGone marks what Close found already removed by someone else.
var errGone = fmt.Errorf("already gone: %w", os.ErrNotExist)

// delEntries removes els, and others if they are still there, in one
// transaction. If some of els were gone already (a flushed ruleset, a
// Sweep), the rest is still removed and the error says so (errors.Is
// os.ErrNotExist).
func (hs *hostState) delEntries(host *netns.Handle, els []nftset.Elem, others ...nftset.Elem) error {
	var b nftset.Batch
	if err := b.Del(els, false); err != nil {
		return err
	}
	if err := b.Del(others, true); err != nil {
		return err
	}
	err := hs.commit(host, &b)
	if !nftset.IsENOENT(err) {
		return err
	}
	// The kernel refused the whole transaction for the missing ones:
	// remove what is left, ignoring what is not there.
	b = nftset.Batch{}
	if err := b.Del(append(els, others...), true); err != nil {
		return err
	}
	if err := hs.commit(host, &b); err != nil && !nftset.IsENOENT(err) {
		return err // (ENOENT now: the table itself is gone)
	}
	return fmt.Errorf("set entries %w", errGone)
}

// removeLink removes the entries e of a closing link; the last of this
// process's links out of the uplink (in a family) also removes the
// process's uplinks entry and, when no live user is left, restores the
// uplink's forwarding of that family: from this process's own record if
// the table's was lost meanwhile.
func (hs *hostState) removeLink(host *netns.Handle, hc *nl.Conn, e nftset.Entries) error {
	var last []lastUse
	hs.mu.Lock()
	for _, k := range upKeys(e) {
		ref := hs.uplinks[k]
		if ref == nil {
			continue
		}
		if ref.users--; ref.users == 0 {
			if ref.registered {
				last = append(last, lastUse{k, ref.origOff})
			}
			delete(hs.uplinks, k)
		}
	}
	hs.mu.Unlock()
	if len(last) == 0 {
		return hs.delEntries(host, e.Elems())
	}
	hook("close uplink release") // (tests: a Connect registering meanwhile)
	return owner.WithHostLock(context.Background(), host, func() error { return hs.unregister(host, hc, e, last) })
}

// removeLinks removes the entries of closing links: those of all links
// but the last of each uplink forwarding (uplink and family) in one
// transaction, the last ones each with their uplink's release (see
// removeLink).
func (hs *hostState) removeLinks(host *netns.Handle, hc *nl.Conn, links []*owned) error {
	if len(links) == 1 {
		return hs.removeLink(host, hc, links[0].ent)
	}
	left := map[upKey]int{}
	for _, o := range links {
		for _, k := range upKeys(o.ent) {
			left[k]++
		}
	}
	var bulk []nftset.Elem
	var last []*owned
	for _, o := range links {
		isLast := false
		for _, k := range upKeys(o.ent) {
			left[k]--
			isLast = isLast || left[k] == 0
		}
		if isLast {
			last = append(last, o)
		} else {
			bulk = append(bulk, o.ent.Elems()...)
			hs.dropUser(o.ent)
		}
	}
	var errs []error
	if len(bulk) > 0 {
		errs = append(errs, hs.delEntries(host, bulk))
	}
	for _, o := range last {
		errs = append(errs, hs.removeLink(host, hc, o.ent))
	}
	return errors.Join(errs...)
}

// dropUser uncounts one of this process's links e, whose entries are
// removed by someone else (removeLinks) and which is not the last of its
// uplink's users.
func (hs *hostState) dropUser(e nftset.Entries) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	for _, k := range upKeys(e) {
		if ref := hs.uplinks[k]; ref != nil && ref.users > 1 {
			ref.users--
		}
	}
}
