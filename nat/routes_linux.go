package nat

import (
	"errors"
	"net/netip"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// routeKey identifies an IPv4 route of the host for the overlap check.
type routeKey struct {
	table, metric, oif int
	typ                uint8
	dst                netip.Prefix
	gw                 netip.Addr
}

// routeCache is a copy of the host's IPv4 routes (every table; the local
// table holds the host's own addresses), built with one dump and then kept
// current from route notifications. Connect checks overlaps against it, so
// its cost stays flat however many links (each adding routes) exist,
// instead of dumping thousands of routes every time. It lives while the
// process has links in the host namespace; the caller holds hostState.mu.
type routeCache struct {
	w      *nl.Watch
	routes map[routeKey]bool
}

func keyOf(r nl.RouteSpec) routeKey {
	return routeKey{table: r.Table, metric: r.Metric, oif: r.LinkIndex, typ: r.Type, dst: r.Dst, gw: r.Gateway}
}

// current brings the copy up to date and returns it.
func (rc *routeCache) current(host *netns.Handle, hc *nl.Conn) (map[routeKey]bool, error) {
	if rc.w != nil {
		err := rc.w.Poll(rc.apply)
		if err == nil {
			return rc.routes, nil
		}
		rc.close()
		if !errors.Is(err, nl.ErrOverflow) {
			return nil, err
		}
		// Lost notifications: rebuild from a dump below.
	}
	// Links too: the kernel flushes the IPv4 routes of a link that goes
	// down or away without any RTM_DELROUTE, so those events must drop
	// them from the copy.
	w, err := nl.DialWatch(host, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_LINK)
	if err != nil {
		return nil, err
	}
	// Subscribed before the dump: a change racing with it arrives as a
	// notification afterwards and is applied on top.
	msgs, err := hc.Query(nl.DumpRoutes(unix.AF_INET, 0))
	if err != nil {
		w.Close()
		return nil, err
	}
	rc.w, rc.routes = w, make(map[routeKey]bool, len(msgs))
	for _, m := range msgs {
		rc.apply(unix.RTM_NEWROUTE, m.Data)
	}
	if err := rc.w.Poll(rc.apply); err != nil {
		rc.close()
		return nil, err
	}
	return rc.routes, nil
}

func (rc *routeCache) apply(typ uint16, body []byte) {
	if typ == unix.RTM_NEWLINK || typ == unix.RTM_DELLINK {
		if len(body) < unix.SizeofIfInfomsg {
			return
		}
		index := int(nl.NativeEndian.Uint32(body[4:8]))
		flags := nl.NativeEndian.Uint32(body[8:12])
		if typ == unix.RTM_DELLINK || flags&unix.IFF_UP == 0 {
			for k := range rc.routes {
				if k.oif == index {
					delete(rc.routes, k)
				}
			}
		}
		return
	}
	r, err := nl.DecodeRoute(body)
	if err != nil || !r.Dst.Addr().Is4() {
		return
	}
	switch typ {
	case unix.RTM_NEWROUTE:
		rc.routes[keyOf(r)] = true
	case unix.RTM_DELROUTE:
		delete(rc.routes, keyOf(r))
	}
}

func (rc *routeCache) close() {
	if rc.w != nil {
		rc.w.Close()
		rc.w, rc.routes = nil, nil
	}
}
