package nat

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/nsnet/nsnet/nat/internal/flows"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"net/netip"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/dns"
	"github.com/nsnet/nsnet/nat/internal/firewall"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// sysSweep is Sweep on Linux.
func sysSweep(ctx context.Context, host *netns.Handle) (SweepResult, error) {
	res, err := sweep(ctx, host)
	if err != nil {
		return res, fmt.Errorf("nat: sweep: %w", err)
	}
	return res, nil
}

func sweep(ctx context.Context, hostNS *netns.Handle) (res SweepResult, err error) {
	host, err := openHost(hostNS)
	if err != nil {
		return res, err
	}
	defer host.Close()
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
	// Dead links go with one request (see quiesce).
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
	if c, err := nftConn(host); err != nil {
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
	err = owner.WithHostLock(ctx, host, func() error { return sweepTable(host, hc, &res) })
	if err != nil {
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}

func sweepTable(host *netns.Handle, hc *nl.Conn, res *SweepResult) error {
	c, err := nftConn(host)
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
		if nftset.IsENOENT(err) || errors.Is(err, ErrForeignTable) {
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
	var gone []nftset.Elem
	for _, x := range found.entries {
		if !found.live[x.owner] {
			gone = append(gone, x.e)
		}
	}
	more, uerrs := giveBackDeadUplinks(host, hc, found, res)
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
	users   []uplinkUser
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
	claims, err := readClaims(c)
	if nftset.IsENOENT(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	for _, cl := range claims {
		if o, ok := owner.Parse(cl.mark); ok && !cl.cover {
			found.entries = append(found.entries, ownedEntry{nftset.Elem{Set: nftset.ClaimSet(cl.prefix), Key: nftset.ClaimKey(cl.prefix)}, o.ID})
			ids = append(ids, o.ID)
		}
	}
	if found.users, err = readUplinkUsers(c, upKey{}); nftset.IsENOENT(err) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	found.live, err = owner.Live(host, append(ids, ownerIDs(found.users)...))
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

// deadUsers counts the uplinks set's entries of dead owners.
func (f *ownedEntries) deadUsers() int {
	n := 0
	for _, u := range f.users {
		if !f.live[u.owner] {
			n++
		}
	}
	return n
}

// giveBackDeadUplinks returns the uplinks set's entries of dead owners
// and, for an uplink forwarding whose users are all dead and which was off
// before nsnet, turns it back off and adds its opened entry (removed after
// the forwarding, in the caller's transaction).
func giveBackDeadUplinks(host *netns.Handle, hc *nl.Conn, f *ownedEntries, res *SweepResult) (gone []nftset.Elem, errs []error) {
	byUplink := map[upKey][]uplinkUser{}
	for _, u := range f.users {
		byUplink[u.uplink] = append(byUplink[u.uplink], u)
	}
	for k, us := range byUplink {
		anyLive, wasOff := false, false
		for _, u := range us {
			anyLive = anyLive || f.live[u.owner]
			wasOff = wasOff || u.origOff
			if !f.live[u.owner] {
				gone = append(gone, u.elem())
			}
		}
		if anyLive || !wasOff {
			continue
		}
		gone = append(gone, openedElem(k))
		msgs, err := hc.Query(nl.GetLinkByIndex(k.index))
		if err != nil {
			continue // the uplink is gone: nothing to restore
		}
		link, err := nl.DecodeLink(msgs[0].Data)
		if err != nil {
			continue
		}
		done, err := giveBack(host, hc, k)
		if err != nil {
			errs = append(errs, fmt.Errorf("uplink %s %s forwarding: %w", link.Attributes.Name, nftset.FamilyName(k.fam), err))
		}
		if !done || err != nil {
			continue // (not done: the user's choice meanwhile)
		}
		name := link.Attributes.Name
		if k.fam == unix.NFPROTO_IPV6 {
			name += " (IPv6)"
		}
		res.Uplinks = append(res.Uplinks, name)
	}
	return gone, errs
}

// dropEmptied removes the claims' stale covers and then the table, if no
// process has a link in it any more (dropTable checks).
func dropEmptied(host *netns.Handle, c *nftables.Conn, raw *netlink.Conn, res *SweepResult) error {
	if err := dropStaleCovers(c, raw); err != nil && !nftset.IsENOENT(err) {
		return fmt.Errorf("claims: %w", err)
	}
	socks := idleSockets{nft: []*nftables.Conn{c}, raw: []*netlink.Conn{raw}}
	dropped, err := dropTable(host, &socks, nil)
	if err != nil {
		return fmt.Errorf("table: %w", err)
	}
	res.Table = dropped
	return nil
}

// dropStaleCovers removes the covers of claims (see entries.covers) that
// contain no claim any more, in a transaction that commits only if nothing
// committed since they were read: a Connect adding a claim meanwhile may
// need one of them.
func dropStaleCovers(c *nftables.Conn, raw *netlink.Conn) error {
	gen, err := nftset.RuleGeneration(raw)
	if err != nil {
		return err
	}
	claims, err := readClaims(c)
	if err != nil {
		return err
	}
	needed := map[netip.Prefix]bool{}
	for _, cl := range claims {
		if !cl.cover {
			for _, cv := range (nftset.Entries{Prefixes: []netip.Prefix{cl.prefix}}).Covers() {
				p, _ := nftset.ClaimPrefix(cv.Key)
				needed[p] = true
			}
		}
	}
	var stale []nftset.Elem
	for _, cl := range claims {
		if cl.cover && !needed[cl.prefix] {
			stale = append(stale, nftset.Elem{Set: nftset.ClaimSet(cl.prefix), Key: nftset.ClaimKey(cl.prefix)})
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

// claim is an entry of the claims map: a live link's prefix with its
// owner mark, or (cover) a prefix containing one.
type claim struct {
	prefix netip.Prefix
	mark   string
	cover  bool
}

// holder names the link of a claim, from its mark ("link=NAME").
func (c claim) holder() string {
	for _, f := range strings.Fields(c.mark) {
		if name, ok := strings.CutPrefix(f, "link="); ok {
			return "link " + name
		}
	}
	return "a link"
}

// readClaims reads the claims maps, IPv4's and IPv6's.
func readClaims(c *nftables.Conn) ([]claim, error) {
	var out []claim
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
			out = append(out, claim{prefix: p, mark: e.Comment, cover: binary.NativeEndian.Uint32(e.Val) == 0})
		}
	}
	return out, nil
}
