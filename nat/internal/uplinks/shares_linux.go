package uplinks

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/naterr"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/nat/internal/table"
	"github.com/nsnet/nsnet/netns"
)

// Shares is this process's use of uplinks' forwarding in one host: one
// share per uplink forwarding (see the package doc). The zero value is
// ready to use.
type Shares struct {
	mu    sync.Mutex
	byKey map[Key]*share
}

// share is this process's use of one uplink forwarding.
type share struct {
	users      int  // this process's links out of it, counted from Add to Remove
	registered bool // this process has its entry in the uplinks set
	origOff    bool // forwarding was off before the first nsnet user
	// records are the global switch's records (see global_linux.go), for
	// a restore of the table and for the last user's give-back.
	records []nftset.Elem
}

// Add adds the entries e of a new link in one transaction. The first of
// this process's links out of an uplink (in a family) also registers the
// process as a user of the uplink's forwarding of that family, in the same
// transaction and under the host lock, and then turns that forwarding on.
// A failure leaves the shares as they were.
func (s *Shares) Add(ctx context.Context, host *netns.Handle, hc *nl.Conn, t *table.Host, e nftset.Entries) error {
	keys := KeysOf(e)
	registered := true
	s.mu.Lock()
	if s.byKey == nil {
		s.byKey = map[Key]*share{}
	}
	for _, k := range keys {
		sh := s.byKey[k]
		if sh == nil {
			sh = &share{}
			s.byKey[k] = sh
		}
		sh.users++
		registered = registered && sh.registered
	}
	s.mu.Unlock()
	var err error
	if registered {
		err = t.Add(host, e, nil)
	} else {
		err = owner.WithHostLock(ctx, host, func() error { return s.register(host, hc, t, e, keys) })
	}
	if err != nil {
		if last := s.drop(keys); len(last) > 0 {
			// A Close of the share's other links ran meanwhile and left
			// the unregistering to this link.
			owner.WithHostLock(context.Background(), host, func() error { return s.unregister(host, hc, t, nil, last) })
		}
	}
	return err
}

// register is Add for links whose uplink forwardings are not all
// registered yet; it runs under the host lock.
func (s *Shares) register(host *netns.Handle, hc *nl.Conn, t *table.Host, e nftset.Entries, keys []Key) error {
	var todo []Key
	s.mu.Lock()
	for _, k := range keys {
		if !s.byKey[k].registered { // (or registered by another Add while this one waited)
			todo = append(todo, k)
		}
	}
	s.mu.Unlock()
	if len(todo) == 0 {
		return t.Add(host, e, nil)
	}
	wasOff, records, err := Share(host, hc, t, e, todo, owner.Self, false)
	if err != nil {
		return err
	}
	s.mu.Lock()
	for _, k := range todo {
		sh := s.byKey[k]
		sh.registered, sh.origOff = true, wasOff[k]
		if k.Global() {
			sh.records = records
		}
	}
	s.mu.Unlock()
	return nil
}

// drop uncounts a link out of keys and returns the registered shares it
// was the last user of (with this process's record of the original
// setting); unregistered shares without users are forgotten.
func (s *Shares) drop(keys []Key) (last []Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		sh := s.byKey[k]
		if sh == nil || sh.users == 0 {
			continue
		}
		if sh.users--; sh.users == 0 {
			if sh.registered {
				last = append(last, k)
			} else {
				delete(s.byKey, k)
			}
		}
	}
	return last
}

// Remove removes the entries e of a closing link; the last of this
// process's links out of the uplink (in a family) also removes the
// process's uplinks entry and, when no live user is left, restores the
// uplink's forwarding of that family: from this process's own record if
// the table's was lost meanwhile.
// Then the covers of its prefixes that no other claim needs go too (see
// table.Host.DropCovers).
func (s *Shares) Remove(host *netns.Handle, hc *nl.Conn, t *table.Host, e nftset.Entries) error {
	return errors.Join(s.remove(host, hc, t, e), t.DropCovers(host, e.Prefixes))
}

func (s *Shares) remove(host *netns.Handle, hc *nl.Conn, t *table.Host, e nftset.Entries) error {
	last := s.drop(KeysOf(e))
	if len(last) == 0 {
		return t.Del(host, e.Elems())
	}
	Hook("close uplink release") // (tests: a Connect registering meanwhile)
	return owner.WithHostLock(context.Background(), host, func() error { return s.unregister(host, hc, t, e.Elems(), last) })
}

// RemoveAll removes the entries of closing links: those of all links but
// the last of each uplink forwarding in one transaction, the last ones
// each with their uplink's release, then their covers (see Remove).
func (s *Shares) RemoveAll(host *netns.Handle, hc *nl.Conn, t *table.Host, es []nftset.Entries) error {
	if len(es) == 1 {
		return s.Remove(host, hc, t, es[0])
	}
	left := map[Key]int{}
	for _, e := range es {
		for _, k := range KeysOf(e) {
			left[k]++
		}
	}
	var bulk []nftset.Elem
	var last []nftset.Entries
	for _, e := range es {
		isLast := false
		for _, k := range KeysOf(e) {
			left[k]--
			isLast = isLast || left[k] == 0
		}
		if isLast {
			last = append(last, e)
		} else {
			bulk = append(bulk, e.Elems()...)
			s.drop(KeysOf(e)) // (never the last: e's last one follows)
		}
	}
	var errs []error
	if len(bulk) > 0 {
		errs = append(errs, t.Del(host, bulk))
	}
	var prefixes []netip.Prefix
	for _, e := range es {
		prefixes = append(prefixes, e.Prefixes...)
	}
	for _, e := range last {
		errs = append(errs, s.remove(host, hc, t, e))
	}
	return errors.Join(append(errs, t.DropCovers(host, prefixes))...)
}

// unregister removes els and, for each share of last still unused (not
// reused by an Add meanwhile), the process's uplinks entry, restoring the
// forwarding where no live user is left. It runs under the host lock.
func (s *Shares) unregister(host *netns.Handle, hc *nl.Conn, t *table.Host, els []nftset.Elem, last []Key) error {
	var stale []nftset.Elem
	var ferrs []error
	var done []Key
	wasOff := map[Key]bool{}
	var records []nftset.Elem
	s.mu.Lock()
	for _, k := range last {
		if sh := s.byKey[k]; sh != nil && sh.users == 0 {
			delete(s.byKey, k)
			done, wasOff[k] = append(done, k), sh.origOff
			if k.Global() {
				records = sh.records
			}
		}
	}
	s.mu.Unlock()
	for _, k := range done {
		users, live, err := liveUsers(host, t, k)
		if err != nil {
			return err
		}
		others, off := false, wasOff[k]
		for _, u := range users {
			if u.Owner != owner.ID && live[u.Owner] {
				others = true
				continue
			}
			stale = append(stale, u.Elem())
			off = off || u.OrigOff
		}
		if !slices.ContainsFunc(users, func(u User) bool { return u.Owner == owner.ID }) {
			ferrs = append(ferrs, fmt.Errorf("uplink forwarding record (%s) %w", nftset.FamilyName(k.Fam), naterr.ErrGone))
		}
		if others || !off {
			continue
		}
		// Forwarding back off first, then the drop of everything else goes
		// (opened): the host forwards nothing meanwhile it did not before.
		// If the user turned forwarding on for every interface meanwhile
		// (net.ipv4.ip_forward=1, net.ipv6.conf.all.forwarding=1), it
		// stays as the user set it.
		if k.Global() {
			// The table's records if it has them (it had them all along
			// unless flushed meanwhile), else this process's copy.
			if recs, rerr := tableRecords(host, t); rerr == nil && len(recs) > 0 {
				records = recs
			}
			stale = append(stale, records...)
		}
		err = Hook("close uplink forwarding")
		if err == nil {
			_, err = GiveBack(host, hc, k, records)
			if errors.Is(err, os.ErrNotExist) {
				err = fmt.Errorf("uplink (index %d) %w", k.Index, naterr.ErrGone)
			}
		}
		if err != nil {
			ferrs = append(ferrs, fmt.Errorf("uplink forwarding (%s): %w", nftset.FamilyName(k.Fam), err))
		}
		if !k.Global() || len(records) == 0 {
			stale = append(stale, OpenedElem(k)) // (else records[0])
		}
	}
	if len(els) > 0 || len(stale) > 0 {
		ferrs = append(ferrs, t.Del(host, els, stale...))
	}
	return errors.Join(ferrs...)
}

// Elems returns the uplinks entries of this process's registered shares,
// with their opened entries: what a restore puts back.
func (s *Shares) Elems() []nftset.Elem {
	s.mu.Lock()
	defer s.mu.Unlock()
	var els []nftset.Elem
	for k, sh := range s.byKey {
		if sh.registered {
			els = append(els, UserElem(k, owner.Self, sh.origOff))
			switch {
			case sh.origOff && k.Global():
				els = append(els, sh.records...)
			case sh.origOff:
				els = append(els, OpenedElem(k))
			}
		}
	}
	return els
}

// Withdraw takes back the opened entries of this process's uplinks of
// family fam: someone turned the family's forwarding on for every
// interface (a container engine started after nsnet, or the host's owner),
// choosing to forward, and the drop of everything else arriving at those
// uplinks would break what they forward (Docker's containers and ports).
// The shares no longer count as having turned forwarding on: a restore
// puts no opened entry back, and the last user leaves forwarding on. The
// global switch's records (IPv6 before Linux 6.17) are not touched.
func (s *Shares) Withdraw(host *netns.Handle, t *table.Host, fam byte) error {
	s.mu.Lock()
	var gone []nftset.Elem
	for k, sh := range s.byKey {
		if k.Fam == fam && !k.Global() && sh.origOff {
			sh.origOff = false
			gone = append(gone, OpenedElem(k))
		}
	}
	s.mu.Unlock()
	if len(gone) == 0 {
		return nil
	}
	return t.Del(host, nil, gone...)
}

// Reset forgets every share: the process has no link left in the host.
func (s *Shares) Reset() {
	s.mu.Lock()
	clear(s.byKey)
	s.mu.Unlock()
}
