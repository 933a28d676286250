package nat

// The cross-process protocol. Any number of processes, in one PID
// namespace or in many, may have links in the same host network namespace
// at once. They share the library's table and the uplinks' forwarding, and
// coordinate through the kernel alone:
//
// Owners. Each process draws a random owner ID at start. While it has
// links in a host network namespace it holds a unix socket bound there to
// the abstract name "@nsnet-owner-ID". Abstract names belong to a network
// namespace, not to a PID namespace, and the kernel frees one when its
// process exits, however it exits (SIGKILL included). So any process in
// the host namespace tells a live owner from a dead one by trying to bind
// that name: EADDRINUSE means alive. Pid numbers, which repeat across PID
// namespaces and are reused, play no part in it. Everything the library
// makes carries the mark "nsnet owner=ID pid=P" (the host veth as its
// ifalias, every set entry as its comment); the pid is for people.
//
// Prefixes. The claims map holds the prefix of every live Link and Rules,
// mapped to its host end's index, and every prefix containing one of them
// (its covers, down to /8), mapped to 0. A link's entries are added in one
// transaction: its own claim with NLM_F_EXCL (refused if the prefix is
// claimed or covers a claim: one inside it), its covers without (refused
// only where a cover is claimed itself, as the data differ: it is inside
// another claim). So of two processes connecting overlapping prefixes at
// the same moment, exactly one succeeds. Covers are shared and stay after
// Close; one that no claim needs any more is removed, with a
// generation-checked transaction, when it is in the way of a new claim or
// by Sweep. (A hash map: an interval set did the same with one entry per
// prefix, but each commit cost the kernel more the more prefixes it
// held.)
//
// Uplink forwarding. The uplinks set holds one entry per (uplink index,
// owner) using the uplink, commented with the uplink's forwarding before
// the first of them ("orig=off" or "orig=on"). The first user in a process
// reads the uplink's entries, takes the original setting from a live one
// (or from the kernel when none is live), adds its own entry and turns
// forwarding on; the last user in a process removes its entry and, when no
// live user is left, restores the original. Each of these
// read-decide-write sequences runs under the host lock: the abstract name
// "@nsnet-lock", bound by one socket at a time in the host namespace and
// freed by the kernel when its holder dies.
//
// The table. It is made with all its sets and chains in one transaction;
// a table of that name whose sets do not carry the library's comments was
// not made by nsnet and is never changed (ErrForeignTable). It is removed
// only when its links set is empty, by a transaction that carries the
// generation read before that check (NFNL_BATCH_GENID): if anything
// committed in between, the kernel refuses it and the check runs again.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"os"
	"slices"

	"github.com/google/nftables"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// upKey names an uplink's forwarding of one family: its interface index
// and unix.NFPROTO_IPV4 or _IPV6.
type upKey struct {
	index int
	fam   byte
}

func (k upKey) String() string {
	return fmt.Sprintf("%s of interface %d", nftset.FamilyName(k.fam), k.index)
}

// upKeys are the uplink forwardings the link e needs, one per family.
func upKeys(e nftset.Entries) []upKey {
	var ks []upKey
	for _, fam := range e.Families() {
		ks = append(ks, upKey{e.Uplink, fam})
	}
	return ks
}

func uplinkKey(k upKey, id string) []byte {
	return append(nftset.FamKey(k.index, k.fam), nftset.IfName(id)...)
}

// userElem is this process's entry in the uplinks set for k, with the
// uplink's original forwarding in its comment.
func userElem(k upKey, wasOff bool) nftset.Elem { return ownerUserElem(k, owner.Self, wasOff) }

// ownerUserElem is the entry in the uplinks set for k of the owner o.
func ownerUserElem(k upKey, o owner.Mark, wasOff bool) nftset.Elem {
	o.Orig = "on"
	if wasOff {
		o.Orig = "off"
	}
	return nftset.Elem{Set: nftset.SetUplinks, Key: uplinkKey(k, o.ID), Comment: o.String()}
}

// uplinkUser is an entry of the uplinks set.
type uplinkUser struct {
	key     []byte
	uplink  upKey
	owner   string // "" if the mark cannot be read
	origOff bool
}

func (u uplinkUser) elem() nftset.Elem { return nftset.Elem{Set: nftset.SetUplinks, Key: u.key} }

// readUplinkUsers returns the uplinks entries, of one uplink's family or
// (the zero upKey) all.
func readUplinkUsers(c *nftables.Conn, k upKey) ([]uplinkUser, error) {
	els, err := c.GetSetElements(nftset.ByName[nftset.SetUplinks])
	if err != nil {
		return nil, fmt.Errorf("read uplinks set: %w", err)
	}
	var out []uplinkUser
	for _, e := range els {
		if len(e.Key) < 8+unix.IFNAMSIZ {
			continue
		}
		key := upKey{int(binary.NativeEndian.Uint32(e.Key[:4])), e.Key[4]}
		if k != (upKey{}) && key != k {
			continue
		}
		o, _ := owner.Parse(e.Comment)
		out = append(out, uplinkUser{key: e.Key, uplink: key, owner: o.ID, origOff: o.Orig == "off"})
	}
	return out, nil
}

// liveUplinkUsers reads the uplinks entries of one uplink's family and
// which of their owners are alive.
func (hs *hostState) liveUplinkUsers(host *netns.Handle, uplink upKey) ([]uplinkUser, map[string]bool, error) {
	users, err := hs.uplinkUsers(host, uplink)
	if err != nil {
		return nil, nil, err
	}
	live, err := owner.Live(host, ownerIDs(users))
	return users, live, err
}

// ownerIDs lists the owners of us.
func ownerIDs(us []uplinkUser) []string {
	var ids []string
	for _, u := range us {
		ids = append(ids, u.owner)
	}
	return ids
}

// ownTable checks that the table called nsnet is the library's: it has
// every set of the library's, each with the library's key type.
// (google/nftables does not read a set's comment back, or that would be
// the mark.)
func (hs *hostState) ownTable(host *netns.Handle) error {
	c, err := hs.nft(host)
	if err != nil {
		return err
	}
	err = nftset.OwnTable(c)
	hs.putNFT(c, err)
	return err
}

// dropTable deletes the table when its links set is empty (no process has
// a link in it), if it is the library's, in a transaction that commits
// only if nothing committed since the check; dropped says whether it did.
// It gives up, leaving the table, while busy (if not nil) says that this
// process has links there again.
func dropTable(host *netns.Handle, socks *idleSockets, busy func() bool) (dropped bool, err error) {
	raw, err := socks.rawConn(host)
	if err != nil {
		return false, err
	}
	c, err := socks.nftConn(host)
	if err != nil {
		return false, err
	}
	for attempt := 0; attempt < 5; attempt++ {
		if busy != nil && busy() {
			return false, nil // a Connect came in meanwhile
		}
		gen, err := nftset.RuleGeneration(raw)
		if err != nil {
			return false, err
		}
		els, err := c.GetSetElements(nftset.ByName[nftset.SetLinks])
		if nftset.IsENOENT(err) {
			return false, nil // gone already
		}
		if err != nil || len(els) > 0 {
			return false, err
		}
		if err := nftset.CheckSets(c); err != nil {
			return false, nil // not ours (any more): not ours to remove
		}
		b := nftset.Batch{Gen: &gen}
		if err := b.DelTable(); err != nil {
			return false, err
		}
		err = b.Commit(raw)
		switch {
		case err == nftset.ErrGenChanged:
			// One error for the whole batch: the socket holds no other
			// reply and can be used again.
			continue
		case nftset.IsENOENT(err):
			return false, nil
		case err != nil:
			return false, err
		}
		return true, nil
	}
	return false, nil // a busy host: the next last Close or Sweep removes it
}

// register is addLink for links whose uplink forwardings (one per family:
// keys) are not all this process's yet; it runs under the host lock.
func (hs *hostState) register(host *netns.Handle, hc *nl.Conn, e nftset.Entries, keys []upKey, refs []*uplinkRef) error {
	var todo []upKey
	var mine, again []keyRef // again: registered by this process still, no new decision
	hs.mu.Lock()
	for i, ref := range refs {
		switch reg := hs.regs[keys[i]]; {
		case ref.registered: // (by another goroutine while this one waited)
		case reg != nil:
			// An earlier link's Close has not unregistered yet (it waits
			// for the lock): the process's entry and the forwarding are
			// there, and stay for this registration.
			again = append(again, keyRef{keys[i], ref})
			ref.origOff = reg.origOff
		default:
			todo = append(todo, keys[i])
			mine = append(mine, keyRef{keys[i], ref})
		}
	}
	hs.mu.Unlock()
	if len(todo) == 0 {
		err := hs.addEntries(host, e, nil)
		if err == nil {
			hs.registered(again)
		}
		return err
	}
	wasOff, err := hs.shareUplinks(host, hc, e, todo, owner.Self, false)
	if err != nil {
		return err
	}
	hs.mu.Lock()
	for _, kr := range mine {
		kr.ref.origOff = wasOff[kr.key]
	}
	hs.mu.Unlock()
	hs.registered(append(again, mine...))
	return nil
}

// shareUplinks adds e's entries and, for each uplink forwarding of keys,
// a share of it for the owner id (whose mark is mark): its uplinks entry
// with the original setting, and the opened entry where the family was
// off, in one transaction; then it turns on the forwardings that were off.
// The original setting is a live other owner's record; with none, the
// kernel's setting now, or off where a dead owner's record says so. Dead
// owners' entries go in the same transaction, and id's own leftover too,
// unless keepOwn: then a key id has an entry for already is its share, as
// it is (the persistent owner's, see persistent_linux.go). It runs under
// the host lock; a failure leaves nothing, and wasOff gives each key's
// original setting.
func (hs *hostState) shareUplinks(host *netns.Handle, hc *nl.Conn, e nftset.Entries, keys []upKey, o owner.Mark, keepOwn bool) (wasOff map[upKey]bool, err error) {
	wasOff = map[upKey]bool{}
	var stale, add, opened []nftset.Elem
	var turnOn []upKey
	for _, k := range keys {
		users, live, err := hs.liveUplinkUsers(host, k)
		if err != nil {
			return nil, err
		}
		own, liveOther, deadOff := false, false, false
		for _, u := range users {
			switch {
			case u.owner == o.ID && keepOwn:
				own = true
			case u.owner != o.ID && live[u.owner]:
				liveOther, wasOff[k] = true, u.origOff
			default:
				stale = append(stale, u.elem())
				deadOff = deadOff || u.origOff
			}
		}
		if own {
			continue
		}
		if !liveOther {
			on, err := nl.LinkForwards(host, hc, k.index, k.fam)
			if err != nil {
				return nil, fmt.Errorf("uplink: %w", err)
			}
			wasOff[k] = deadOff || !on
			if !on {
				turnOn = append(turnOn, k)
			}
		}
		add = append(add, ownerUserElem(k, o, wasOff[k]))
		if wasOff[k] {
			// The uplink forwards this family for nsnet only: nothing else
			// arriving there is forwarded (the forward chain drops it), as
			// before.
			opened = append(opened, openedElem(k))
		}
	}
	err = hs.addEntries(host, e, func(b *nftset.Batch) error {
		if len(stale) > 0 {
			if err := b.Del(stale, true); err != nil {
				return err
			}
		}
		return b.Add(append(add, opened...), false)
	})
	if err != nil {
		return nil, err
	}
	for i, k := range turnOn {
		err := hook("uplink forwarding")
		if err == nil {
			err = nl.SetLinkForwarding(host, hc, k.index, k.fam, true)
		}
		if err != nil {
			for _, done := range turnOn[:i] {
				nl.SetLinkForwarding(host, hc, done.index, done.fam, false)
			}
			hs.delEntries(host, append(e.Elems(), add...), opened...)
			return nil, fmt.Errorf("uplink forwarding (%s): %w", nftset.FamilyName(k.fam), err)
		}
	}
	return wasOff, nil
}

// keyRef is an uplink forwarding and this process's use of it.
type keyRef struct {
	key upKey
	ref *uplinkRef
}

// registered marks the refs registered and counts them in hs.regs (under
// the host lock).
func (hs *hostState) registered(krs []keyRef) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	for _, kr := range krs {
		kr.ref.registered = true
		reg := hs.regs[kr.key]
		if reg == nil {
			reg = &registration{origOff: kr.ref.origOff}
			hs.regs[kr.key] = reg
		}
		reg.count++
	}
}

// lastUse is an uplink forwarding that a closing link was this process's
// last user of, with this process's own record of its original setting
// (used when the table's was lost).
type lastUse struct {
	key    upKey
	wasOff bool
}

// unregister is removeLink for links that were the last of this
// process's users of the uplink forwardings last; it runs under the host
// lock.
func (hs *hostState) unregister(host *netns.Handle, hc *nl.Conn, e nftset.Entries, last []lastUse) error {
	var stale []nftset.Elem
	var ferrs []error
	var done []lastUse // the registrations that were the process's last
	hs.mu.Lock()
	for _, lu := range last {
		reg := hs.regs[lu.key]
		if reg != nil {
			if reg.count--; reg.count > 0 {
				continue // registered again meanwhile (see hostState.regs)
			}
			delete(hs.regs, lu.key)
		}
		done = append(done, lu)
	}
	hs.mu.Unlock()
	for _, lu := range done {
		users, live, err := hs.liveUplinkUsers(host, lu.key)
		if err != nil {
			return err
		}
		others, wasOff := false, lu.wasOff
		for _, u := range users {
			if u.owner != owner.ID && live[u.owner] {
				others = true
				continue
			}
			stale = append(stale, u.elem())
			wasOff = wasOff || u.origOff
		}
		if !slices.ContainsFunc(users, func(u uplinkUser) bool { return u.owner == owner.ID }) {
			ferrs = append(ferrs, fmt.Errorf("uplink forwarding record (%s) %w", nftset.FamilyName(lu.key.fam), errGone))
		}
		if others || !wasOff {
			continue
		}
		// Forwarding back off first, then the drop of everything else goes
		// (opened): the host forwards nothing meanwhile it did not before.
		// If the user turned forwarding on for every interface meanwhile
		// (net.ipv4.ip_forward=1, net.ipv6.conf.all.forwarding=1), it
		// stays as the user set it.
		err = hook("close uplink forwarding")
		if err == nil {
			_, err = giveBack(host, hc, lu.key)
			if errors.Is(err, os.ErrNotExist) {
				err = fmt.Errorf("uplink (index %d) %w", lu.key.index, errGone)
			}
		}
		if err != nil {
			ferrs = append(ferrs, fmt.Errorf("uplink forwarding (%s): %w", nftset.FamilyName(lu.key.fam), err))
		}
		stale = append(stale, openedElem(lu.key))
	}
	ferrs = append(ferrs, hs.delEntries(host, e.Elems(), stale...))
	return errors.Join(ferrs...)
}

// openedElem is an uplink family's entry in the opened set.
func openedElem(k upKey) nftset.Elem {
	return nftset.Elem{Set: nftset.SetOpened, Key: nftset.FamKey(k.index, k.fam), Comment: "nsnet"}
}

// giveBack turns the uplink's forwarding of family k.fam back off, as it
// was before nsnet, unless the user turned it on for every interface
// meanwhile (see nl.ForwardsAll): then it is left on, and done is false.
func giveBack(host *netns.Handle, hc *nl.Conn, k upKey) (done bool, err error) {
	if nl.ForwardsAll(host, k.fam) {
		return false, nil
	}
	return true, nl.SetLinkForwarding(host, hc, k.index, k.fam, false)
}
