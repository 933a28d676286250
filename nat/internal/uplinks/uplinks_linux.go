package uplinks

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/nat/internal/table"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// Hook, set by nat's tests through nat's own hook, is called before the
// uplink's forwarding is turned on or back off; an error fails that step.
var Hook = func(step string) error { return nil }

// Key names an uplink's forwarding of one family: its interface index and
// unix.NFPROTO_IPV4 or _IPV6. Index 0 is the family's global switch, which
// forwards between all interfaces (IPv6's, net.ipv6.conf.all.forwarding,
// on a kernel without force_forwarding: see global_linux.go).
type Key struct {
	Index int
	Fam   byte
}

func (k Key) String() string {
	if k.Global() {
		return nftset.FamilyName(k.Fam) + " of every interface"
	}
	return fmt.Sprintf("%s of interface %d", nftset.FamilyName(k.Fam), k.Index)
}

// Global tells the global switch's key.
func (k Key) Global() bool { return k.Index == 0 }

// KeysOf returns the uplink forwardings the link e needs, one per family:
// the global switch for IPv6 when e.GlobalV6.
func KeysOf(e nftset.Entries) []Key {
	var ks []Key
	for _, fam := range e.Families() {
		if fam == unix.NFPROTO_IPV6 && e.GlobalV6 {
			ks = append(ks, Key{0, fam})
		} else {
			ks = append(ks, Key{e.Uplink, fam})
		}
	}
	return ks
}

// UserElem is the entry in the uplinks set for k of the owner o, with the
// uplink's original forwarding in its comment.
func UserElem(k Key, o owner.Mark, wasOff bool) nftset.Elem {
	o.Orig = "on"
	if wasOff {
		o.Orig = "off"
	}
	key := append(nftset.FamKey(k.Index, k.Fam), nftset.IfName(o.ID)...)
	return nftset.Elem{Set: nftset.SetUplinks, Key: key, Comment: o.String()}
}

// OpenedElem is an uplink family's entry in the opened set.
func OpenedElem(k Key) nftset.Elem {
	return nftset.Elem{Set: nftset.SetOpened, Key: nftset.FamKey(k.Index, k.Fam), Comment: "nsnet"}
}

// User is an entry of the uplinks set.
type User struct {
	key     []byte
	Uplink  Key
	Owner   string // "" if the mark cannot be read
	OrigOff bool   // the uplink did not forward the family before nsnet
}

// Elem is u's entry, for deleting it.
func (u User) Elem() nftset.Elem { return nftset.Elem{Set: nftset.SetUplinks, Key: u.key} }

// ReadUsers returns the uplinks entries, of one uplink's family or (the
// zero Key) all.
func ReadUsers(c *nftables.Conn, k Key) ([]User, error) {
	els, err := c.GetSetElements(nftset.ByName[nftset.SetUplinks])
	if err != nil {
		return nil, fmt.Errorf("read uplinks set: %w", err)
	}
	var out []User
	for _, e := range els {
		if len(e.Key) < 8+unix.IFNAMSIZ {
			continue
		}
		key := Key{int(binary.NativeEndian.Uint32(e.Key[:4])), e.Key[4]}
		if k != (Key{}) && key != k {
			continue
		}
		o, _ := owner.Parse(e.Comment)
		out = append(out, User{key: e.Key, Uplink: key, Owner: o.ID, OrigOff: o.Orig == "off"})
	}
	return out, nil
}

// OwnerIDs lists the owners of us.
func OwnerIDs(us []User) []string {
	var ids []string
	for _, u := range us {
		ids = append(ids, u.Owner)
	}
	return ids
}

// liveUsers reads the uplinks entries of one uplink's family (none if the
// table is missing: it is made again with the entries) and which of their
// owners are alive.
func liveUsers(host *netns.Handle, t *table.Host, k Key) ([]User, map[string]bool, error) {
	var users []User
	err := t.WithNFT(host, func(c *nftables.Conn) (err error) {
		users, err = ReadUsers(c, k)
		return err
	})
	if nftset.IsENOENT(err) {
		t.Gone()
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	live, err := owner.Live(host, OwnerIDs(users))
	return users, live, err
}

// GiveBack turns the uplink's forwarding of family k.Fam back off, as it
// was before nsnet, unless the user turned it on for every interface
// meanwhile (see nl.ForwardsAll): then it is left on, and done is false.
// The global switch goes off with what its records (see
// ReadGlobalRecords) say was there before.
func GiveBack(host *netns.Handle, hc *nl.Conn, k Key, records []nftset.Elem) (done bool, err error) {
	if k.Global() {
		return true, switchGlobal(host, hc, records, false)
	}
	if nl.ForwardsAll(host, k.Fam) {
		return false, nil
	}
	return true, nl.SetLinkForwarding(host, hc, k.Index, k.Fam, false)
}

// forwards reports whether k forwards now.
func forwards(host *netns.Handle, hc *nl.Conn, k Key) (bool, error) {
	if k.Global() {
		return nl.ForwardsAll(host, k.Fam), nil
	}
	return nl.LinkForwards(host, hc, k.Index, k.Fam)
}

// turnOn turns k's forwarding on (the global switch as its records say).
func turnOn(host *netns.Handle, hc *nl.Conn, k Key, records []nftset.Elem) error {
	if k.Global() {
		return switchGlobal(host, hc, records, true)
	}
	return nl.SetLinkForwarding(host, hc, k.Index, k.Fam, true)
}

// Share adds e's entries and, for each uplink forwarding of keys, a share
// of it for the owner o: its uplinks entry with the original setting, and
// the opened entry where the family was off (for the global switch, with
// its records), in one transaction; then it turns on the forwardings that
// were off. The original setting is a live other owner's record; with
// none, the kernel's setting now, or off where a dead owner's record says
// so. Dead owners' entries go in the same transaction, and o's own
// leftover too, unless keepOwn: then a key o has an entry for already is
// its share, as it is (the persistent owner's). It runs under the host
// lock; a failure leaves nothing. wasOff gives each key's original
// setting, records the global switch's records (made, or the table's).
func Share(host *netns.Handle, hc *nl.Conn, t *table.Host, e nftset.Entries, keys []Key, o owner.Mark, keepOwn bool) (wasOff map[Key]bool, records []nftset.Elem, err error) {
	wasOff = map[Key]bool{}
	var stale, add, opened []nftset.Elem
	var on []Key
	for _, k := range keys {
		users, live, err := liveUsers(host, t, k)
		if err != nil {
			return nil, nil, err
		}
		own, liveOther, deadOff := false, false, false
		for _, u := range users {
			switch {
			case u.Owner == o.ID && keepOwn:
				own = true
			case u.Owner != o.ID && live[u.Owner]:
				liveOther, wasOff[k] = true, u.OrigOff
			default:
				stale = append(stale, u.Elem())
				deadOff = deadOff || u.OrigOff
			}
		}
		if k.Global() {
			// The records of a switch nsnet turned on already (by a live
			// owner, or a dead one: what it changed is still changed).
			if records, err = tableRecords(host, t); err != nil {
				return nil, nil, err
			}
		}
		if own {
			continue
		}
		if !liveOther {
			fwd, err := forwards(host, hc, k)
			if err != nil {
				return nil, nil, fmt.Errorf("uplink: %w", err)
			}
			wasOff[k] = deadOff || !fwd
			if !fwd {
				on = append(on, k)
				if k.Global() && len(records) == 0 {
					if records, err = globalRecords(host, hc); err != nil {
						return nil, nil, err
					}
				}
			}
		}
		add = append(add, UserElem(k, o, wasOff[k]))
		switch {
		case wasOff[k] && k.Global():
			// Its own opened entry first among the records.
			opened = append(opened, records...)
		case wasOff[k] && !nl.ForwardsAll(host, k.Fam):
			// The uplink forwards this family for nsnet only: nothing else
			// arriving there is forwarded (the forward chain drops it), as
			// before. (Where someone forwards the family everywhere since
			// another owner opened it, nothing is dropped: see
			// Shares.Withdraw.)
			opened = append(opened, OpenedElem(k))
		}
	}
	err = t.Add(host, e, func(b *nftset.Batch) error {
		if len(stale) > 0 {
			if err := b.Del(stale, true); err != nil {
				return err
			}
		}
		return b.Add(append(add, opened...), false)
	})
	if err != nil {
		return nil, nil, err
	}
	for i, k := range on {
		err := Hook("uplink forwarding")
		if err == nil {
			err = turnOn(host, hc, k, records)
		}
		if err != nil {
			for _, done := range on[:i+1] {
				GiveBack(host, hc, done, records)
			}
			t.Del(host, append(e.Elems(), add...), opened...)
			return nil, nil, fmt.Errorf("uplink forwarding (%s): %w", nftset.FamilyName(k.Fam), err)
		}
	}
	return wasOff, records, nil
}

// tableRecords reads the global switch's records from the table (none if
// the table is missing).
func tableRecords(host *netns.Handle, t *table.Host) (recs []nftset.Elem, err error) {
	err = t.WithNFT(host, func(c *nftables.Conn) (err error) {
		recs, err = ReadGlobalRecords(c)
		return err
	})
	if nftset.IsENOENT(err) {
		return nil, nil
	}
	return recs, err
}

// GiveBackDead returns the uplinks set's entries of dead owners and, for
// an uplink forwarding whose users are all dead and which was off before
// nsnet, turns it back off and adds its opened entry (and the global
// switch's records; removed after the forwarding, in the caller's
// transaction); restored names the uplinks whose forwarding it turned off
// ("NAME (IPv6)" for IPv6's, "all (IPv6)" for the global switch). c reads
// the table.
func GiveBackDead(host *netns.Handle, hc *nl.Conn, c *nftables.Conn, users []User, live map[string]bool) (gone []nftset.Elem, restored []string, errs []error) {
	byUplink := map[Key][]User{}
	for _, u := range users {
		byUplink[u.Uplink] = append(byUplink[u.Uplink], u)
	}
	for k, us := range byUplink {
		anyLive, wasOff := false, false
		for _, u := range us {
			anyLive = anyLive || live[u.Owner]
			wasOff = wasOff || u.OrigOff
			if !live[u.Owner] {
				gone = append(gone, u.Elem())
			}
		}
		if anyLive || !wasOff {
			continue
		}
		name := "all"
		var records []nftset.Elem
		if k.Global() {
			var err error
			if records, err = ReadGlobalRecords(c); err != nil {
				errs = append(errs, fmt.Errorf("IPv6 forwarding records: %w", err))
				continue
			}
		}
		if len(records) > 0 {
			gone = append(gone, records...) // (its opened entry first)
		} else {
			gone = append(gone, OpenedElem(k))
		}
		if !k.Global() {
			msgs, err := hc.Query(nl.GetLinkByIndex(k.Index))
			if err != nil {
				continue // the uplink is gone: nothing to restore
			}
			link, err := nl.DecodeLink(msgs[0].Data)
			if err != nil {
				continue
			}
			name = link.Attributes.Name
		}
		done, err := GiveBack(host, hc, k, records)
		if err != nil {
			errs = append(errs, fmt.Errorf("uplink %s %s forwarding: %w", name, nftset.FamilyName(k.Fam), err))
		}
		if !done || err != nil {
			continue // (not done: the user's choice meanwhile)
		}
		if k.Fam == unix.NFPROTO_IPV6 {
			name += " (IPv6)"
		}
		restored = append(restored, name)
	}
	return gone, restored, errs
}
