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
// unix.NFPROTO_IPV4 or _IPV6.
type Key struct {
	Index int
	Fam   byte
}

func (k Key) String() string {
	return fmt.Sprintf("%s of interface %d", nftset.FamilyName(k.Fam), k.Index)
}

// KeysOf returns the uplink forwardings the link e needs, one per family.
func KeysOf(e nftset.Entries) []Key {
	var ks []Key
	for _, fam := range e.Families() {
		ks = append(ks, Key{e.Uplink, fam})
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
func GiveBack(host *netns.Handle, hc *nl.Conn, k Key) (done bool, err error) {
	if nl.ForwardsAll(host, k.Fam) {
		return false, nil
	}
	return true, nl.SetLinkForwarding(host, hc, k.Index, k.Fam, false)
}

// Share adds e's entries and, for each uplink forwarding of keys, a share
// of it for the owner o: its uplinks entry with the original setting, and
// the opened entry where the family was off, in one transaction; then it
// turns on the forwardings that were off. The original setting is a live
// other owner's record; with none, the kernel's setting now, or off where
// a dead owner's record says so. Dead owners' entries go in the same
// transaction, and o's own leftover too, unless keepOwn: then a key o has
// an entry for already is its share, as it is (the persistent owner's).
// It runs under the host lock; a failure leaves nothing, and wasOff gives
// each key's original setting.
func Share(host *netns.Handle, hc *nl.Conn, t *table.Host, e nftset.Entries, keys []Key, o owner.Mark, keepOwn bool) (wasOff map[Key]bool, err error) {
	wasOff = map[Key]bool{}
	var stale, add, opened []nftset.Elem
	var turnOn []Key
	for _, k := range keys {
		users, live, err := liveUsers(host, t, k)
		if err != nil {
			return nil, err
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
		if own {
			continue
		}
		if !liveOther {
			on, err := nl.LinkForwards(host, hc, k.Index, k.Fam)
			if err != nil {
				return nil, fmt.Errorf("uplink: %w", err)
			}
			wasOff[k] = deadOff || !on
			if !on {
				turnOn = append(turnOn, k)
			}
		}
		add = append(add, UserElem(k, o, wasOff[k]))
		if wasOff[k] {
			// The uplink forwards this family for nsnet only: nothing else
			// arriving there is forwarded (the forward chain drops it), as
			// before.
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
		return nil, err
	}
	for i, k := range turnOn {
		err := Hook("uplink forwarding")
		if err == nil {
			err = nl.SetLinkForwarding(host, hc, k.Index, k.Fam, true)
		}
		if err != nil {
			for _, done := range turnOn[:i] {
				nl.SetLinkForwarding(host, hc, done.Index, done.Fam, false)
			}
			t.Del(host, append(e.Elems(), add...), opened...)
			return nil, fmt.Errorf("uplink forwarding (%s): %w", nftset.FamilyName(k.Fam), err)
		}
	}
	return wasOff, nil
}

// GiveBackDead returns the uplinks set's entries of dead owners
// and, for an uplink forwarding whose users are all dead and which was off
// before nsnet, turns it back off and adds its opened entry (removed after
// the forwarding, in the caller's transaction); restored names the uplinks whose forwarding
// it turned off ("NAME (IPv6)" for IPv6's).
func GiveBackDead(host *netns.Handle, hc *nl.Conn, users []User, live map[string]bool) (gone []nftset.Elem, restored []string, errs []error) {
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
		gone = append(gone, OpenedElem(k))
		msgs, err := hc.Query(nl.GetLinkByIndex(k.Index))
		if err != nil {
			continue // the uplink is gone: nothing to restore
		}
		link, err := nl.DecodeLink(msgs[0].Data)
		if err != nil {
			continue
		}
		done, err := GiveBack(host, hc, k)
		if err != nil {
			errs = append(errs, fmt.Errorf("uplink %s %s forwarding: %w", link.Attributes.Name, nftset.FamilyName(k.Fam), err))
		}
		if !done || err != nil {
			continue // (not done: the user's choice meanwhile)
		}
		name := link.Attributes.Name
		if k.Fam == unix.NFPROTO_IPV6 {
			name += " (IPv6)"
		}
		restored = append(restored, name)
	}
	return gone, restored, errs
}
