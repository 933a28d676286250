package hostview

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// RouteKey identifies a route of the host for the overlap check.
type RouteKey struct {
	Table, Metric, OIF int // the route's table, metric and output link
	Type               uint8
	Dst                netip.Prefix
	Gw                 netip.Addr
}

// span is a route's destination as a range of addresses (IPv4 ranges
// sort before IPv6 ones).
type span struct {
	first, last netip.Addr
	key         RouteKey
}

// routeCache is a copy of the host's IPv4 and IPv6 routes (every table; the local
// table holds the host's own addresses), built with one dump and then kept
// current from notifications, with indexes so that Connect's checks cost
// O(log n) however many links (each adding routes) exist, instead of a dump
// of thousands of routes every time. It lives while the process has links
// in the host namespace; View's lock guards it.
//
// The kernel does not announce every change, and a copy that can be wrong
// is worse than none: a link going down flushes its routes but keeps its local ones, and says
// nothing of either; a link going away flushes all of its routes without
// a word; a replaced route is announced as new, with no word of the one it
// replaced. The copy follows what it can follow exactly (a link going down
// or away) and is rebuilt from a dump after anything else (a replace, a
// deleted link while multipath routes exist), so that it always agrees
// with the kernel (TestHostViewAfterChanges checks it against ip -j).
type routeCache struct {
	w      *nl.Watch
	stale  bool        // an event the copy cannot follow exactly: rebuild
	spans  []span      // routes that can overlap a prefix, by first address
	locals map[int]int // links with IPv4 addresses: index → local routes
	// globals6 counts the global IPv6 addresses of links (their local
	// routes), which masquerading IPv6 needs on the uplink.
	globals6 map[int]int
	// defaults are the main table's default routes (few).
	defaults map[RouteKey]bool
	// byLink holds every route, by output link: it finds a link's routes
	// when the link goes down or away.
	byLink map[int]map[RouteKey]bool
}

// reset empties the copy, which w will keep current.
func (rc *routeCache) reset(w *nl.Watch) {
	*rc = routeCache{w: w, locals: map[int]int{}, globals6: map[int]int{}, defaults: map[RouteKey]bool{}, byLink: map[int]map[RouteKey]bool{}}
}

// has reports whether the copy holds k.
func (rc *routeCache) has(k RouteKey) bool { return rc.byLink[k.OIF][k] }

// search returns the index of the first span starting at or after first.
func (rc *routeCache) search(first netip.Addr) int {
	return sort.Search(len(rc.spans), func(i int) bool { return rc.spans[i].first.Compare(first) >= 0 })
}

func keyOf(r nl.RouteSpec) RouteKey {
	return RouteKey{Table: r.Table, Metric: r.Metric, OIF: r.LinkIndex, Type: r.Type, Dst: r.Dst, Gw: r.Gateway}
}

// spanOf is the first and last address of p.
func spanOf(p netip.Prefix) (first, last netip.Addr) {
	first = p.Masked().Addr()
	b := first.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ = netip.AddrFromSlice(b)
	return first, last
}

// linkLocal6 is IPv6's link-local prefix, whose routes every IPv6 link has.
var linkLocal6 = netip.MustParsePrefix("fe80::/10")

// counts tells which routes take part in the overlap check: not the
// default route, not broadcast, multicast or anycast entries, not IPv6's
// link-local ones (no link may have a link-local prefix).
func (k RouteKey) counts() bool {
	return k.Dst.Bits() > 0 && k.Type != unix.RTN_BROADCAST && k.Type != unix.RTN_MULTICAST &&
		k.Type != unix.RTN_ANYCAST && !linkLocal6.Overlaps(k.Dst)
}

// global6 tells a local route of a global IPv6 address.
func (k RouteKey) global6() bool {
	return k.Type == unix.RTN_LOCAL && k.Dst.Addr().Is6() && !linkLocal6.Contains(k.Dst.Addr())
}

// refresh brings the copy up to date.
func (rc *routeCache) refresh(host *netns.Handle, hc *nl.Conn) error {
	for attempt := 0; ; attempt++ {
		if rc.w != nil {
			err := rc.w.Poll(rc.apply)
			if err == nil && !rc.stale {
				return nil
			}
			rc.close()
			if (err != nil && !errors.Is(err, nl.ErrOverflow)) || attempt == 3 {
				return errors.Join(err, fmt.Errorf("host routes: %w", nl.ErrInterrupted))
			}
			// Lost notifications or a change the copy cannot follow:
			// rebuild from a dump.
		}
		if err := rc.build(host, hc); err != nil {
			return err
		}
	}
}

// build makes the copy anew from a dump.
func (rc *routeCache) build(host *netns.Handle, hc *nl.Conn) error {
	// Links too: their deletes and downs flush routes without any
	// RTM_DELROUTE (see routeCache).
	w, err := nl.DialWatch(host, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE, unix.RTNLGRP_LINK)
	if err != nil {
		return err
	}
	// Subscribed before the dump: a change racing with it arrives as a
	// notification afterwards and is applied on top (refresh polls next).
	// (A route twice in a dump, which IPv6's restarted walk can give, is
	// one route here.)
	msgs, err := hc.Dump(nl.DumpRoutes(unix.AF_INET, 0))
	if err != nil {
		w.Close()
		return err
	}
	msgs6, err := hc.Dump(nl.DumpRoutes(unix.AF_INET6, 0))
	if err != nil {
		w.Close()
		return err
	}
	msgs = append(msgs, msgs6...)
	rc.reset(w)
	for _, m := range msgs {
		rc.apply(unix.RTM_NEWROUTE, 0, m.Data)
	}
	return nil
}

func (rc *routeCache) add(k RouteKey) {
	if rc.has(k) {
		return
	}
	if rc.byLink[k.OIF] == nil {
		rc.byLink[k.OIF] = map[RouteKey]bool{}
	}
	rc.byLink[k.OIF][k] = true
	if k.Dst.Bits() == 0 && k.Table == unix.RT_TABLE_MAIN && k.OIF != 0 {
		rc.defaults[k] = true
	}
	if k.Type == unix.RTN_LOCAL && k.Dst.Addr().Is4() {
		rc.locals[k.OIF]++
	}
	if k.global6() {
		rc.globals6[k.OIF]++
	}
	if k.counts() {
		first, last := spanOf(k.Dst)
		i := rc.search(first)
		rc.spans = slices.Insert(rc.spans, i, span{first, last, k})
	}
}

func (rc *routeCache) del(k RouteKey) {
	if !rc.has(k) {
		return
	}
	delete(rc.defaults, k)
	if delete(rc.byLink[k.OIF], k); len(rc.byLink[k.OIF]) == 0 {
		delete(rc.byLink, k.OIF)
	}
	if k.Type == unix.RTN_LOCAL && k.Dst.Addr().Is4() {
		if rc.locals[k.OIF]--; rc.locals[k.OIF] <= 0 {
			delete(rc.locals, k.OIF)
		}
	}
	if k.global6() {
		if rc.globals6[k.OIF]--; rc.globals6[k.OIF] <= 0 {
			delete(rc.globals6, k.OIF)
		}
	}
	if k.counts() {
		first, _ := spanOf(k.Dst)
		for i := rc.search(first); i < len(rc.spans) && rc.spans[i].first == first; i++ {
			if rc.spans[i].key == k {
				rc.spans = slices.Delete(rc.spans, i, i+1)
				break
			}
		}
	}
}

func (rc *routeCache) apply(typ, flags uint16, body []byte) {
	if typ == unix.RTM_NEWLINK || typ == unix.RTM_DELLINK {
		if len(body) < unix.SizeofIfInfomsg {
			return
		}
		index := int(nl.NativeEndian.Uint32(body[4:8]))
		up := nl.NativeEndian.Uint32(body[8:12])&unix.IFF_UP != 0
		switch {
		case typ == unix.RTM_DELLINK && len(rc.byLink[0]) == 0:
			// Every route through a deleted link goes with it, silently.
			for k := range rc.byLink[index] {
				rc.del(k)
			}
		case typ == unix.RTM_DELLINK:
			rc.stale = true // multipath routes (oif 0) may have gone too
		case !up:
			// Down: the kernel flushes the link's IPv4 routes but keeps
			// its local ones (the addresses stay), silently. Every Close
			// passes here (a veth goes down before it goes away). (IPv6
			// announces what it flushes.)
			for k := range rc.byLink[index] {
				if k.Type != unix.RTN_LOCAL && k.Dst.Addr().Is4() {
					rc.del(k)
				}
			}
		}
		return
	}
	r, err := nl.DecodeRoute(body)
	if err != nil || !r.Dst.IsValid() {
		return
	}
	switch {
	case typ == unix.RTM_NEWROUTE && flags&unix.NLM_F_REPLACE != 0:
		rc.stale = true // which route it replaced is not said
	case typ == unix.RTM_NEWROUTE:
		rc.add(keyOf(r))
	case typ == unix.RTM_DELROUTE:
		rc.del(keyOf(r))
	}
}

// overlap returns a route or address of the host that overlaps cidr, or
// nil: a route inside cidr (found by binary search on first addresses), or
// one containing it (one lookup per shorter length, through the same
// search).
func (rc *routeCache) overlap(cidr netip.Prefix) *RouteKey {
	first, last := spanOf(cidr)
	found := func(k RouteKey) *RouteKey { return &k }
	i := rc.search(first)
	if i < len(rc.spans) && rc.spans[i].first.Compare(last) <= 0 {
		return found(rc.spans[i].key)
	}
	for bits := cidr.Bits() - 1; bits > 0; bits-- {
		// (search finds the first span of the family at bits 0: the
		// default route, which does not count, is not among them.)
		outer, _ := spanOf(netip.PrefixFrom(cidr.Addr(), bits))
		for j := rc.search(outer); j < len(rc.spans) && rc.spans[j].first == outer; j++ {
			if rc.spans[j].last.Compare(last) >= 0 {
				return found(rc.spans[j].key)
			}
		}
	}
	return nil
}

// defaultLinks returns the links of the default routes of family fam
// that the kernel would use: those of the lowest metric (one, unless
// several tie; a multipath route gives link 0).
func (rc *routeCache) defaultLinks(fam byte) []int {
	metric := -1
	for k := range rc.defaults {
		if k.Type == unix.RTN_UNICAST && familyOf(k.Dst.Addr()) == fam && (metric < 0 || k.Metric < metric) {
			metric = k.Metric
		}
	}
	var links []int
	for k := range rc.defaults {
		if k.Type == unix.RTN_UNICAST && familyOf(k.Dst.Addr()) == fam && k.Metric == metric && !slices.Contains(links, k.OIF) {
			links = append(links, k.OIF)
		}
	}
	slices.Sort(links)
	return links
}

func (rc *routeCache) close() {
	if rc.w != nil {
		rc.w.Close()
		*rc = routeCache{}
	}
}

// familyOf is an address's family as meta nfproto gives it.
func familyOf(a netip.Addr) byte {
	if a.Is4() {
		return unix.NFPROTO_IPV4
	}
	return unix.NFPROTO_IPV6
}

// View is what a process knows of one host namespace's routes and
// addresses while it has links there: a routeCache, exactly right or
// rebuilt (see routeCache). Safe for concurrent use: mu serialises the
// copy; reading the notifications queued since the last look never waits
// for the kernel, and a rebuild dumps the routes while mu is held (the
// copy must not be read half built).
type View struct {
	mu sync.Mutex
	rc routeCache
}

// Facts are Connect's questions about the host, answered from one copy.
type Facts struct {
	// Overlap is the first route or address of the host overlapping one
	// of the prefixes asked about, nil if none.
	Overlap *RouteKey
	// Defaults are the links of the main table's default routes of the
	// family asked about (only when no uplink was given).
	Defaults []int
	// Uplink is the uplink's index: the one given, or the only link of
	// the default routes (0 if there is not exactly one).
	Uplink int
	// HasV4 and HasV6 say that the uplink has an IPv4 address, and a
	// global IPv6 one.
	HasV4, HasV6 bool
}

// Ask brings the copy up to date (hc is a socket of host) and answers:
// the overlaps of prefixes, and, for uplink 0, the default routes of
// family defFam.
func (v *View) Ask(host *netns.Handle, hc *nl.Conn, prefixes []netip.Prefix, uplink int, defFam byte) (Facts, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.rc.refresh(host, hc); err != nil {
		return Facts{}, err
	}
	f := Facts{Uplink: uplink}
	for _, p := range prefixes {
		if f.Overlap = v.rc.overlap(p); f.Overlap != nil {
			break
		}
	}
	if uplink == 0 {
		if f.Defaults = v.rc.defaultLinks(defFam); len(f.Defaults) == 1 {
			f.Uplink = f.Defaults[0]
		}
	}
	f.HasV4, f.HasV6 = v.rc.locals[f.Uplink] > 0, v.rc.globals6[f.Uplink] > 0
	return f, nil
}

// Close forgets the copy and closes its socket (the process's last link
// in the host is gone).
func (v *View) Close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rc.close()
}
