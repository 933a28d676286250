package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
)

// Sweep removes what dead processes left behind in host (nil: the current
// namespace): processes killed or crashed before they closed their Links
// and Rules. It finds the library's marks — the host veth's ifalias and
// the comment of every set entry, "nsnet owner=ID pid=P" — and removes the
// veths and entries of owners that no longer run, whatever PID namespace
// they ran in (see protocol_linux.go: liveness is not a pid), turns
// forwarding off again on uplinks that a dead owner had turned on and no
// live one uses, and removes the table if nothing is left in it. What live
// processes own is never touched. Safe at any time and at any size,
// concurrently with other processes' Connect, Close and Sweep, for example
// at program start.
//
// A process killed in the middle of Connect, between creating a veth pair
// with a name it was given and marking it, leaves an unmarked pair that
// Sweep cannot attribute and leaves alone.
func Sweep(host *netns.Handle) (SweepResult, error) {
	res, err := sweep(host)
	if err != nil {
		return res, fmt.Errorf("nat: sweep: %w", err)
	}
	return res, nil
}

func sweep(hostNS *netns.Handle) (res SweepResult, err error) {
	if hostNS != nil && hostNS.Fd() < 0 {
		return res, fmt.Errorf("host namespace: %w", netns.ErrClosed)
	}
	host, err := resolveHost(hostNS)
	if err != nil {
		return res, fmt.Errorf("host namespace: %w", err)
	}
	defer host.Close()
	hc, err := nl.Dial(host)
	if err != nil {
		return res, err
	}
	defer hc.Close()
	var errs []error

	// Links.
	msgs, err := hc.Query(nl.DumpLinks())
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
		if o, ok := parseOwner(*link.Attributes.Alias); ok {
			links = append(links, marked{int(link.Index), link.Attributes.Name, o.id})
			ids = append(ids, o.id)
		}
	}
	live, err := liveOwners(host, ids)
	if err != nil {
		return res, err
	}
	// Dead links go into a fresh device group deleted with one request:
	// one RCU grace period for all of them, not one each (see CloseAll).
	g := randomGroup()
	var moves []nl.Request
	for _, l := range links {
		if !live[l.owner] {
			moves = append(moves, nl.SetGroup(l.index, g))
			res.Links = append(res.Links, l.name)
		}
	}
	if len(moves) > 0 {
		_, lerrs, err := hc.Do(moves...)
		for _, e := range lerrs {
			if e != nil && !errors.Is(e, os.ErrNotExist) { // gone meanwhile: fine
				errs = append(errs, fmt.Errorf("links: %w", e))
			}
		}
		if err == nil {
			err = hc.Exec(nl.DeleteGroup(g))
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("links: %w", err))
		}
	}

	// Set entries, uplink forwarding, the table: under the host lock, so
	// that no Connect or Close of another process decides about an
	// uplink's forwarding in between.
	err = withHostLock(host, func() error { return sweepTable(host, hc, &res) })
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
	raw, err := dialNFT(host)
	if err != nil {
		return err
	}
	defer func() { raw.Close() }()
	if err := (&hostState{}).ownTable(host); err != nil {
		if isENOENT(err) {
			return nil // no table: nothing more of ours
		}
		if errors.Is(err, ErrForeignTable) {
			return nil // not ours: not ours to sweep
		}
		return err
	}
	// Every entry with its owner; a table vanishing meanwhile (another
	// process's last Close) means there is nothing left.
	type entry struct {
		e     elem
		owner string
	}
	var all []entry
	var ids []string
	for _, set := range []string{setLinks, setEgress, setSiblings} {
		els, err := c.GetSetElements(setByName[set])
		if isENOENT(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("set %s: %w", set, err)
		}
		for _, x := range els {
			o, _ := parseOwner(x.Comment)
			all = append(all, entry{elem{set: set, key: x.Key}, o.id})
			ids = append(ids, o.id)
		}
	}
	claims, err := readClaims(c)
	if isENOENT(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, cl := range claims {
		o, _ := parseOwner(cl.mark)
		for _, e := range cl.elems() {
			all = append(all, entry{e, o.id})
		}
		ids = append(ids, o.id)
	}
	users, err := readUplinkUsers(c, 0)
	if isENOENT(err) {
		return nil
	}
	if err != nil {
		return err
	}
	ids = append(ids, ownerIDs(users)...)
	live, err := liveOwners(host, ids)
	if err != nil {
		return err
	}
	var gone []elem
	for _, x := range all {
		if !live[x.owner] {
			gone = append(gone, x.e)
			if !x.e.end {
				res.Elements++
			}
		}
	}
	// Uplinks whose users are all dead go back to their original setting.
	byUplink := map[int][]uplinkUser{}
	for _, u := range users {
		byUplink[u.uplink] = append(byUplink[u.uplink], u)
	}
	var errs []error
	for idx, us := range byUplink {
		anyLive, wasOff := false, false
		for _, u := range us {
			anyLive = anyLive || live[u.owner]
			wasOff = wasOff || u.origOff
		}
		for _, u := range us {
			if !live[u.owner] {
				gone = append(gone, u.elem())
				res.Elements++
			}
		}
		if anyLive || !wasOff {
			continue
		}
		msgs, err := hc.Query(nl.GetLinkByIndex(idx))
		if err != nil {
			continue // the uplink is gone: nothing to restore
		}
		link, err := nl.DecodeLink(msgs[0].Data)
		if err != nil {
			continue
		}
		if err := hc.Exec(nl.SetForwarding(idx, false)); err != nil {
			errs = append(errs, fmt.Errorf("uplink %s forwarding: %w", link.Attributes.Name, err))
			continue
		}
		res.Uplinks = append(res.Uplinks, link.Attributes.Name)
	}
	if len(gone) > 0 {
		// Destroy, not delete: an entry another sweeper removed meanwhile
		// is no error. Large sweeps go in several transactions.
		var b batch
		err := b.del(gone, true)
		if err == nil {
			err = b.commit(raw)
		}
		if err != nil && !isENOENT(err) {
			errs = append(errs, fmt.Errorf("set entries: %w", err))
		}
	}
	if len(errs) == 0 {
		hs := &hostState{}
		if hs.tableUnused(host) {
			socks := idleSockets{nft: []*nftables.Conn{c}, raw: []*netlink.Conn{raw}}
			dropped, err := hs.dropTable(host, &socks)
			if err != nil {
				errs = append(errs, fmt.Errorf("table: %w", err))
			}
			res.Table = dropped
		}
	}
	return errors.Join(errs...)
}

// claim is a prefix in the claims set, with its owner mark.
type claim struct {
	prefix netip.Prefix
	mark   string
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

// elems are the two entries of the claim's range.
func (c claim) elems() []elem {
	return entries{prefix: c.prefix}.elems()[:2]
}

// readClaims reads the claims set: each range's start entry carries the
// mark, its end the address after its last.
func readClaims(c *nftables.Conn) ([]claim, error) {
	els, err := c.GetSetElements(setByName[setClaims])
	if err != nil {
		return nil, err
	}
	type point struct {
		addr uint32
		end  bool
		mark string
	}
	var pts []point
	for _, e := range els {
		if len(e.Key) != 4 {
			continue
		}
		pts = append(pts, point{binary.BigEndian.Uint32(e.Key), e.IntervalEnd, e.Comment})
	}
	sort.Slice(pts, func(i, j int) bool {
		if pts[i].addr != pts[j].addr {
			return pts[i].addr < pts[j].addr
		}
		return pts[i].end && !pts[j].end // an end before a start at the same address
	})
	var out []claim
	for i, p := range pts {
		if p.end || i+1 >= len(pts) || !pts[i+1].end {
			continue
		}
		size := uint64(pts[i+1].addr) - uint64(p.addr)
		bits := 32
		for s := size; s > 1; s >>= 1 {
			bits--
		}
		a := binary.BigEndian.AppendUint32(nil, p.addr)
		out = append(out, claim{netip.PrefixFrom(netip.AddrFrom4([4]byte(a)), bits), p.mark})
	}
	return out, nil
}
