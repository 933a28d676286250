package route

import (
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

func (r Route) spec(c *nl.Conn) (nl.RouteSpec, error) {
	s := nl.RouteSpec{
		Dst: r.Dst, Gateway: r.Gateway, LinkIndex: r.LinkIndex, Src: r.Src,
		Metric: r.Metric, Table: r.Table, Scope: r.Scope, Protocol: r.Protocol, Type: r.Type,
	}
	if r.Link != "" && r.LinkIndex == 0 {
		index, err := c.LinkIndex(r.Link)
		if err != nil {
			return s, err
		}
		s.LinkIndex = index
	}
	for _, h := range r.NextHops {
		nh := nl.NextHopSpec{Gateway: h.Gateway, LinkIndex: h.LinkIndex, Weight: h.Weight}
		if h.Link != "" && h.LinkIndex == 0 {
			index, err := c.LinkIndex(h.Link)
			if err != nil {
				return s, err
			}
			nh.LinkIndex = index
		}
		s.NextHops = append(s.NextHops, nh)
	}
	if s.Protocol == 0 {
		s.Protocol = unix.RTPROT_BOOT
	}
	if s.Type == 0 {
		s.Type = unix.RTN_UNICAST
	}
	if s.Scope == 0 && !s.Gateway.IsValid() && s.LinkIndex != 0 {
		s.Scope = unix.RT_SCOPE_LINK
	}
	return s, nil
}

// sysAdd is Add on Linux.
func sysAdd(ns *netns.Handle, r Route) error { return change(ns, "add", r, false) }

// sysReplace is Replace on Linux.
func sysReplace(ns *netns.Handle, r Route) error { return change(ns, "replace", r, true) }

// sysAddDefault is AddDefault on Linux.
func sysAddDefault(ns *netns.Handle, gw netip.Addr) error {
	if !gw.IsValid() {
		return fmt.Errorf("route: add default: %w: no gateway given", ErrInvalidRoute)
	}
	dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if gw.Is6() {
		dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return Add(ns, Route{Dst: dst, Gateway: gw})
}

func change(ns *netns.Handle, op string, r Route, replace bool) error {
	return exec(ns, op, r, func(s nl.RouteSpec) nl.Request { return nl.NewRoute(s, replace) })
}

// sysDelete is Delete on Linux.
func sysDelete(ns *netns.Handle, r Route) error {
	return exec(ns, "delete", r, func(s nl.RouteSpec) nl.Request {
		if r.Protocol == 0 {
			s.Protocol = 0
		}
		if r.Type == 0 {
			s.Type = unix.RTN_UNSPEC // any type, as ip route del sends: a blackhole too
		}
		if r.Scope == 0 {
			s.Scope = unix.RT_SCOPE_NOWHERE // "any scope" for RTM_DELROUTE
		}
		return nl.DelRoute(s)
	})
}

func exec(ns *netns.Handle, op string, r Route, req func(nl.RouteSpec) nl.Request) error {
	if err := r.validate(); err != nil {
		return fmt.Errorf("route: %s: %w", op, err)
	}
	c, err := nl.Dial(ns)
	if err != nil {
		return fmt.Errorf("route: %s %v: %w", op, r, err)
	}
	defer c.Close()
	s, err := r.spec(c)
	if err == nil {
		err = c.Exec(req(s))
	}
	if err != nil {
		return fmt.Errorf("route: %s %v: %w", op, r, err)
	}
	return nil
}

// sysList is List on Linux.
func sysList(ns *netns.Handle, f *Filter) ([]Route, error) {
	if f == nil {
		f = &Filter{}
	}
	var family uint8
	switch f.Family {
	case 0:
	case 4:
		family = unix.AF_INET
	case 6:
		family = unix.AF_INET6
	default:
		return nil, fmt.Errorf("route: list: %w: family %d is not 4, 6 or 0", ErrInvalidRoute, f.Family)
	}
	table := f.Table
	switch {
	case table == 0:
		table = TableMain
	case table == -1:
		table = 0
	case table < 0:
		return nil, fmt.Errorf("route: list: %w: table %d", ErrInvalidRoute, f.Table)
	}
	c, err := nl.Dial(ns)
	if err != nil {
		return nil, fmt.Errorf("route: list: %w", err)
	}
	defer c.Close()
	var msgs []netlink.Message
	if family == unix.AF_INET {
		// IPv4's dump resumes by key and flags an interrupted read.
		msgs, err = c.Dump(nl.DumpRoutes(family, table))
	} else {
		// IPv6's restarts its walk after a change, skipping as many
		// routes as it had sent: it repeats or misses some, unflagged.
		msgs, err = nl.DumpUnchanged(ns, c, nl.DumpRoutes(family, table), nil, unix.RTNLGRP_IPV6_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("route: list: %w", err)
	}
	var out []Route
	for _, m := range msgs {
		s, err := nl.DecodeRoute(m.Data)
		if err != nil {
			return nil, fmt.Errorf("route: list: %w", err)
		}
		if table != 0 && s.Table != table {
			continue
		}
		out = append(out, fromSpec(s))
	}
	nameLinks(c, out)
	return out, nil
}

// nameLinks fills in the names of the routes' links (and next hops'), as
// ip prints them ("dev eth0"): a query per link, or one dump for many.
func nameLinks(c *nl.Conn, rs []Route) {
	names := map[int]string{}
	for _, r := range rs {
		names[r.LinkIndex] = ""
		for _, h := range r.NextHops {
			names[h.LinkIndex] = ""
		}
	}
	delete(names, 0)
	if len(names) > 16 {
		if msgs, err := c.Dump(nl.DumpLinks()); err == nil {
			for _, m := range msgs {
				if l, err := nl.DecodeLink(m.Data); err == nil {
					names[int(l.Index)] = l.Attributes.Name
				}
			}
		}
	} else {
		for i := range names {
			names[i], _ = nl.LinkName(c, i)
		}
	}
	for i := range rs {
		rs[i].Link = names[rs[i].LinkIndex]
		for j := range rs[i].NextHops {
			rs[i].NextHops[j].Link = names[rs[i].NextHops[j].LinkIndex]
		}
	}
}

func fromSpec(s nl.RouteSpec) Route {
	r := Route{
		Dst: s.Dst, Gateway: s.Gateway, LinkIndex: s.LinkIndex, Src: s.Src, Metric: s.Metric,
		Table: s.Table, Scope: s.Scope, Protocol: s.Protocol, Type: s.Type,
	}
	for _, h := range s.NextHops {
		r.NextHops = append(r.NextHops, NextHop{Gateway: h.Gateway, LinkIndex: h.LinkIndex, Weight: h.Weight})
	}
	return r
}

// sysGet is Get on Linux.
func sysGet(ns *netns.Handle, dst netip.Addr) (Route, error) {
	if !dst.IsValid() || dst.Zone() != "" {
		return Route{}, fmt.Errorf("route: get: %w: %v", ErrInvalidRoute, dst)
	}
	dst = dst.Unmap()
	c, err := nl.Dial(ns)
	if err != nil {
		return Route{}, fmt.Errorf("route: get %v: %w", dst, err)
	}
	defer c.Close()
	msgs, err := c.Query(nl.GetRoute(dst))
	if err == nil && len(msgs) != 1 {
		err = fmt.Errorf("%d replies", len(msgs))
	}
	if err != nil {
		return Route{}, fmt.Errorf("route: get %v: %w", dst, err)
	}
	s, err := nl.DecodeRoute(msgs[0].Data)
	if err != nil {
		return Route{}, fmt.Errorf("route: get %v: %w", dst, err)
	}
	r := []Route{fromSpec(s)}
	nameLinks(c, r)
	return r[0], nil
}
