package nat

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// addLink adds the entries e of a new link in one transaction. The first
// of this process's links out of an uplink also registers the process as
// a user of the uplink's forwarding (see protocol_linux.go), in the same
// transaction, and then turns that forwarding on.
func (hs *hostState) addLink(host *netns.Handle, hc *nl.Conn, e entries) error {
	hs.mu.Lock()
	ref := hs.uplinks[e.uplink]
	if ref == nil {
		ref = &uplinkRef{}
		hs.uplinks[e.uplink] = ref
	}
	ref.users++
	registered := ref.registered
	hs.mu.Unlock()
	var err error
	if registered {
		err = hs.addEntries(host, e, nil)
	} else {
		err = withHostLock(host, func() error { return hs.register(host, hc, e, ref) })
	}
	if err != nil {
		hs.mu.Lock()
		if ref.users--; ref.users == 0 && !ref.registered {
			delete(hs.uplinks, e.uplink)
		}
		hs.mu.Unlock()
	}
	return err
}

// addEntries commits e's entries, exclusively (a claim overlapping
// another, a host end already in links: EEXIST), with the uplinks changes
// extra; a refusal says which entry is in the way.
func (hs *hostState) addEntries(host *netns.Handle, e entries, extra func(*batch) error) error {
	var b batch
	if err := b.add(e.elems(), true); err != nil {
		return err
	}
	if extra != nil {
		if err := extra(&b); err != nil {
			return err
		}
	}
	err := hs.commitEntries(host, &b)
	if errors.Is(err, unix.EEXIST) {
		return hs.inTheWay(host, e, err)
	}
	return err
}

// inTheWay explains an EEXIST from adding e: a claim of another link that
// overlaps e's prefix (ErrOverlap naming it; also errDeadHolder when its
// owner is dead), or e's host end already there (os.ErrExist).
func (hs *hostState) inTheWay(host *netns.Handle, e entries, err error) error {
	c, cerr := hs.nft(host)
	if cerr != nil {
		return err
	}
	claims, cerr := readClaims(c)
	hs.putNFT(c, cerr)
	if cerr != nil {
		return err
	}
	for _, cl := range claims {
		if !cl.prefix.Overlaps(e.prefix) {
			continue
		}
		o, ok := parseOwner(cl.mark)
		if !ok {
			return fmt.Errorf("%w: %v is claimed (%s)", ErrOverlap, cl.prefix, cl.mark)
		}
		live, lerr := liveOwners(host, []string{o.id})
		if lerr == nil && !live[o.id] {
			return fmt.Errorf("%w: %v is held by %s, %w", ErrOverlap, cl.prefix, cl.holder(), errDeadHolder)
		}
		return fmt.Errorf("%w: %v is used by %s of live pid %d", ErrOverlap, cl.prefix, cl.holder(), o.pid)
	}
	return fmt.Errorf("interface index %d already has nsnet entries: %w", e.link, os.ErrExist)
}

// register is addLink for the first of this process's links out of the
// uplink; it runs under the host lock.
func (hs *hostState) register(host *netns.Handle, hc *nl.Conn, e entries, ref *uplinkRef) error {
	hs.mu.Lock()
	registered := ref.registered // by another goroutine while this one waited
	hs.mu.Unlock()
	if registered {
		return hs.addEntries(host, e, nil)
	}
	users, err := hs.uplinkUsers(host, e.uplink)
	if err != nil {
		return err
	}
	live, err := liveOwners(host, ownerIDs(users))
	if err != nil {
		return err
	}
	var stale []elem // dead users', and a leftover of this process's own
	liveOther, wasOff, deadOff := false, false, false
	for _, u := range users {
		switch {
		case u.owner != ownerID && live[u.owner]:
			liveOther, wasOff = true, u.origOff
		default:
			stale = append(stale, u.elem())
			deadOff = deadOff || u.origOff
		}
	}
	turnOn := false
	if !liveOther {
		// No live user: the kernel's setting now is the original, unless a
		// dead user's record says it was off before that user.
		msgs, err := hc.Query(nl.GetLinkByIndex(e.uplink))
		if err != nil {
			return fmt.Errorf("uplink: %w", err)
		}
		on, _ := nl.Forwarding(msgs[0].Data)
		wasOff, turnOn = deadOff || !on, !on
	}
	mark := ownerMark + origOn
	if wasOff {
		mark = ownerMark + origOff
	}
	mine := elem{set: setUplinks, key: uplinkKey(e.uplink, ownerID), comment: mark}
	err = hs.addEntries(host, e, func(b *batch) error {
		if len(stale) > 0 {
			if err := b.del(stale, true); err != nil {
				return err
			}
		}
		return b.add([]elem{mine}, false)
	})
	if err != nil {
		return err
	}
	if turnOn {
		err := hook("uplink forwarding")
		if err == nil {
			err = hc.Exec(nl.SetForwarding(e.uplink, true))
		}
		if err != nil {
			hs.delEntries(host, append(e.elems(), mine))
			return fmt.Errorf("uplink forwarding: %w", err)
		}
	}
	hs.mu.Lock()
	ref.registered, ref.origOff = true, wasOff
	hs.mu.Unlock()
	return nil
}

// uplinkUsers reads the uplinks entries of one uplink; none if the table
// is missing (it is made again with the entries).
func (hs *hostState) uplinkUsers(host *netns.Handle, uplink int) ([]uplinkUser, error) {
	c, err := hs.nft(host)
	if err != nil {
		return nil, err
	}
	users, err := readUplinkUsers(c, uplink)
	hs.putNFT(c, err)
	if isENOENT(err) {
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
func (hs *hostState) delEntries(host *netns.Handle, els []elem, others ...elem) error {
	var b batch
	if err := b.del(els, false); err != nil {
		return err
	}
	if err := b.del(others, true); err != nil {
		return err
	}
	err := hs.commit(host, &b)
	if !isENOENT(err) {
		return err
	}
	// The kernel refused the whole transaction for the missing ones:
	// remove what is left, ignoring what is not there.
	b = batch{}
	if err := b.del(append(els, others...), true); err != nil {
		return err
	}
	if err := hs.commit(host, &b); err != nil && !isENOENT(err) {
		return err // (ENOENT now: the table itself is gone)
	}
	return fmt.Errorf("set entries %w", errGone)
}

// removeLink removes the entries e of a closing link; the last of this
// process's links out of the uplink also removes the process's uplinks
// entry and, when no live user is left, restores the uplink's forwarding:
// from this process's own record if the table's was lost meanwhile.
func (hs *hostState) removeLink(host *netns.Handle, hc *nl.Conn, e entries) error {
	hs.mu.Lock()
	ref := hs.uplinks[e.uplink]
	last := false
	var wasOff bool
	if ref != nil {
		ref.users--
		if ref.users == 0 {
			last, wasOff = ref.registered, ref.origOff
			delete(hs.uplinks, e.uplink)
		}
	}
	hs.mu.Unlock()
	if !last {
		return hs.delEntries(host, e.elems())
	}
	return withHostLock(host, func() error {
		users, err := hs.uplinkUsers(host, e.uplink)
		if err != nil {
			return err
		}
		live, err := liveOwners(host, ownerIDs(users))
		if err != nil {
			return err
		}
		others := false
		var stale []elem
		for _, u := range users {
			if u.owner != ownerID && live[u.owner] {
				others = true
				continue
			}
			stale = append(stale, u.elem())
			wasOff = wasOff || u.origOff
		}
		var errs []error
		if !slices.ContainsFunc(users, func(u uplinkUser) bool { return u.owner == ownerID }) {
			errs = append(errs, fmt.Errorf("uplink forwarding record %w", errGone))
		}
		errs = append(errs, hs.delEntries(host, e.elems(), stale...))
		if !others && wasOff {
			err := hook("close uplink forwarding")
			if err == nil {
				err = hc.Exec(nl.SetForwarding(e.uplink, false))
				if errors.Is(err, os.ErrNotExist) {
					err = fmt.Errorf("uplink (index %d) %w", e.uplink, errGone)
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("uplink forwarding: %w", err))
			}
		}
		return errors.Join(errs...)
	})
}
