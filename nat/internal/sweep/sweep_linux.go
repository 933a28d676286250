package sweep

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/bridgeset"
	"github.com/nsnet/nsnet/nat/internal/dns"
	"github.com/nsnet/nsnet/nat/internal/firewall"
	"github.com/nsnet/nsnet/nat/internal/flows"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/nat/internal/table"
	"github.com/nsnet/nsnet/nat/internal/uplinks"
	"github.com/nsnet/nsnet/netns"
)

// Result is what a sweep removed (nat.SweepResult is it, field for field).
type Result struct {
	Links       []string // host veth ends deleted (their peers went with them)
	Elements    int      // set entries removed from the library's table
	Uplinks     []string // uplinks whose forwarding was turned off again ("NAME (IPv6)" for IPv6's)
	Table       bool     // the library's table was removed (no owner left)
	DockerUser  int      // rules removed from Docker's DOCKER-USER chain
	ResolvConfs int      // resolv.conf files removed
}

// Host removes, in host, what owners no longer alive left: their links
// (with one request, see nl.DeleteLinks), resolv.conf files, DOCKER-USER
// rules, set entries and connections, the uplink forwarding they turned
// on, and the table when nothing is left in it.
func Host(ctx context.Context, host *netns.Handle) (res Result, err error) {
	hc, err := nl.Dial(host)
	if err != nil {
		return res, err
	}
	defer hc.Close()
	var errs []error

	// Links.
	msgs, err := hc.Dump(nl.DumpLinks())
	if err != nil {
		return res, fmt.Errorf("links: %w", err)
	}
	type marked struct {
		index int
		name  string
		owner string
	}
	var links []marked
	var ids []string
	for _, m := range msgs {
		link, err := nl.DecodeLink(m.Data)
		if err != nil || link.Attributes.Alias == nil {
			continue
		}
		if o, ok := owner.Parse(*link.Attributes.Alias); ok {
			links = append(links, marked{int(link.Index), link.Attributes.Name, o.ID})
			ids = append(ids, o.ID)
		}
	}
	live, err := owner.Live(host, ids)
	if err != nil {
		return res, err
	}
	// Dead links go with one request.
	var dead []int
	for _, l := range links {
		if !live[l.owner] {
			dead = append(dead, l.index)
			res.Links = append(res.Links, l.name)
		}
	}
	moved, err := nl.DeleteLinks(host, hc, dead, nil)
	for _, e := range append(moved, err) {
		if e != nil && !errors.Is(e, os.ErrNotExist) { // gone meanwhile: fine
			errs = append(errs, fmt.Errorf("links: %w", e))
		}
	}

	// resolv.conf files (see Config.DNS).
	if res.ResolvConfs, err = dns.Sweep(host); err != nil {
		errs = append(errs, fmt.Errorf("dns: %w", err))
	}

	// Docker's DOCKER-USER chain (see Config.DockerUser).
	if c, err := table.NFTConn(host); err != nil {
		errs = append(errs, err)
	} else {
		res.DockerUser, err = firewall.SweepDockerUser(host, c)
		if err != nil {
			errs = append(errs, err)
		}
		c.CloseLasting()
	}

	// Set entries, uplink forwarding, the table: under the host lock, so
	// that no Connect or Close of another process decides about an
	// uplink's forwarding in between.
	err = owner.WithHostLock(ctx, host, func() error {
		return errors.Join(sweepTable(host, hc, &res), sweepBridge(host, &res))
	})
	if err != nil {
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}

// sweepBridge removes dead owners' entries from the bridge table (the
// members of networks, see package bridgeset), and the table once it is
// empty.
func sweepBridge(host *netns.Handle, res *Result) error {
	c, err := table.NFTConn(host)
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	if err := bridgeset.Own(c); err != nil {
		if nftset.IsENOENT(err) || errors.Is(err, bridgeset.ErrForeign) {
			return nil
		}
		return err
	}
	es, err := bridgeset.Read(c, func(s string) (string, bool) { m, ok := owner.Parse(s); return m.ID, ok })
	if err != nil {
		if nftset.IsENOENT(err) {
			return nil
		}
		return err
	}
	var ids []string
	for _, e := range es {
		if e.Owner != "" {
			ids = append(ids, e.Owner)
		}
	}
	live, err := owner.Live(host, ids)
	if err != nil {
		return err
	}
	var gone []nftset.Elem
	for _, e := range es {
		if e.Owner != "" && !live[e.Owner] {
			gone = append(gone, e.Elem)
		}
	}
	raw, err := nftset.DialNFT(host)
	if err != nil {
		return err
	}
	defer raw.Close()
	if len(gone) > 0 {
		b := bridgeset.Batch()
		err := b.Del(gone, true)
		if err == nil {
			err = b.Commit(raw)
		}
		if nftset.IsENOENT(err) {
			return nil // the table went meanwhile
		}
		if err != nil {
			return fmt.Errorf("bridge set entries: %w", err)
		}
		res.Elements += len(gone)
	}
	_, err = bridgeset.Drop(c, raw)
	return err
}

func sweepTable(host *netns.Handle, hc *nl.Conn, res *Result) error {
	c, err := table.NFTConn(host)
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	raw, err := nftset.DialNFT(host)
	if err != nil {
		return err
	}
	defer func() { raw.Close() }()
	if err := nftset.OwnTable(c); err != nil {
		if nftset.IsENOENT(err) || errors.Is(err, nftset.ErrForeignTable) {
			return nil // no table, or not ours: nothing of ours to sweep
		}
		return err
	}
	found, err := readOwned(host, c)
	if err != nil || found == nil {
		return err // (nil: the table vanished meanwhile, nothing is left)
	}
	var errs []error
	// The dead links' connections go too (see flows.Forget): their veths
	// are gone already, so nothing recreates them.
	if err := flows.Forget(host, found.deadLinks()...); err != nil {
		errs = append(errs, err)
	}
	if err := forgetHostFlows(host, found.deadPrefixes()); err != nil {
		errs = append(errs, err)
	}
	var gone []nftset.Elem
	for _, x := range found.entries {
		if !found.live[x.owner] {
			gone = append(gone, x.e)
		}
	}
	more, restored, uerrs := uplinks.GiveBackDead(host, hc, c, found.users, found.live)
	res.Uplinks = append(res.Uplinks, restored...)
	gone = append(gone, more...)
	errs = append(errs, uerrs...)
	res.Elements += len(gone) - len(more) + found.deadUsers()
	if len(gone) > 0 {
		// Destroy, not delete: an entry another sweeper removed meanwhile
		// is no error. Large sweeps go in several transactions.
		var b nftset.Batch
		err := b.Del(gone, true)
		if err == nil {
			err = b.Commit(raw)
		}
		if err != nil && !nftset.IsENOENT(err) {
			errs = append(errs, fmt.Errorf("set entries: %w", err))
		}
	}
	if len(errs) == 0 {
		errs = append(errs, dropEmptied(host, c, raw, res))
	}
	return errors.Join(errs...)
}

// ownedEntries are the entries of the table that carry an owner's mark,
// with the uplinks set's users, and which owners are alive.
type ownedEntries struct {
	entries []ownedEntry
	users   []uplinks.User
	live    map[string]bool
}

type ownedEntry struct {
	e     nftset.Elem
	owner string
}

// readOwned reads every entry with its owner (an entry without a mark is
// not ours to judge), and which owners live; nil if the table vanished
// meanwhile (another process's last Close): then nothing is left.
func readOwned(host *netns.Handle, c *nftables.Conn) (*ownedEntries, error) {
	var found ownedEntries
	var ids []string
	for _, set := range nftset.LinkSets {
		els, err := c.GetSetElements(nftset.ByName[set])
		if nftset.IsENOENT(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("set %s: %w", set, err)
		}
		for _, x := range els {
			if o, ok := owner.Parse(x.Comment); ok {
				found.entries = append(found.entries, ownedEntry{nftset.Elem{Set: set, Key: x.Key}, o.ID})
				ids = append(ids, o.ID)
			}
		}
	}
	claims, err := table.ReadClaims(c)
	if nftset.IsENOENT(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	for _, cl := range claims {
		if o, ok := owner.Parse(cl.Mark); ok && !cl.Cover {
			found.entries = append(found.entries, ownedEntry{nftset.ClaimElem(cl.Prefix), o.ID})
			ids = append(ids, o.ID)
		}
	}
	if found.users, err = uplinks.ReadUsers(c, uplinks.Key{}); nftset.IsENOENT(err) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	found.live, err = owner.Live(host, append(ids, uplinks.OwnerIDs(found.users)...))
	return &found, err
}

// deadLinks are the host end indexes of dead owners' links.
func (f *ownedEntries) deadLinks() []int {
	var dead []int
	for _, x := range f.entries {
		if x.e.Set == nftset.SetLinks && !f.live[x.owner] && len(x.e.Key) == 4 {
			dead = append(dead, int(binary.NativeEndian.Uint32(x.e.Key)))
		}
	}
	return dead
}

// deadPrefixes are the prefixes that dead owners' links claimed.
func (f *ownedEntries) deadPrefixes() []netip.Prefix {
	var dead []netip.Prefix
	for _, x := range f.entries {
		if p, ok := nftset.ClaimPrefix(x.e.Key); ok && !f.live[x.owner] && (x.e.Set == nftset.SetClaims || x.e.Set == nftset.SetClaims6) {
			dead = append(dead, p)
		}
	}
	return dead
}

// forgetHostFlows deletes the host's own connections (unmarked: the
// from_link chain marks only what links send) with the dead links'
// prefixes, such as a network's bridge's multicast reports, or the host's
// connections to a dead namespace: the next holder of a prefix inherits
// none.
func forgetHostFlows(host *netns.Handle, prefixes []netip.Prefix) error {
	if len(prefixes) == 0 {
		return nil
	}
	c, err := flows.Dial(host)
	if err != nil {
		return err
	}
	defer c.Close()
	return flows.ForgetAddrs(c, []uint32{0}, func(a netip.Addr) bool {
		return slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(a) })
	})
}

// deadUsers counts the uplinks set's entries of dead owners.
func (f *ownedEntries) deadUsers() int {
	n := 0
	for _, u := range f.users {
		if !f.live[u.Owner] {
			n++
		}
	}
	return n
}

// dropEmptied removes the claims' stale covers and then the table, if no
// process has a link in it any more (table.Drop checks).
func dropEmptied(host *netns.Handle, c *nftables.Conn, raw *netlink.Conn, res *Result) error {
	if err := table.DropStaleCovers(c, raw); err != nil && !nftset.IsENOENT(err) {
		return fmt.Errorf("claims: %w", err)
	}
	socks := table.Idle{NFT: []*nftables.Conn{c}, Raw: []*netlink.Conn{raw}}
	dropped, err := table.Drop(host, &socks, nil)
	if err != nil {
		return fmt.Errorf("table: %w", err)
	}
	res.Table = dropped
	return nil
}
