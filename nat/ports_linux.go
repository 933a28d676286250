package nat

// Published ports (Port): see the comment of nftset.PortMap.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"

	"github.com/nsnet/nsnet/nat/internal/flows"
	"github.com/nsnet/nsnet/nat/internal/hostview"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/nat/internal/sweep"
	"github.com/nsnet/nsnet/qdisc"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// rec is the link's record (nil for a nil or zero Link or Rules).
func (l *Link) rec() *owned {
	if l == nil {
		return nil
	}
	return l.owned
}

func (r *Rules) rec() *owned {
	if r == nil {
		return nil
	}
	return r.owned
}

// sysPublish is Publish on Linux.
func (l *Link) sysPublish(ports []Port) error {
	return l.rec().portsOp("publish", ports, func(o *owned) error { return o.publish(ports, netip.Addr{}) })
}

// sysUnpublish is Unpublish on Linux.
func (l *Link) sysUnpublish(ports []Port) error {
	return l.rec().portsOp("unpublish", ports, func(o *owned) error { return o.unpublishPorts(ports, netip.Addr{}) })
}

// sysPublish is Rules.Publish on Linux: to must be a host address of one
// of the Rules' prefixes.
func (r *Rules) sysPublish(to netip.Addr, ports []Port) error {
	return r.rec().portsOp("publish", ports, func(o *owned) error {
		if !slices.ContainsFunc(o.ent.Prefixes, func(p netip.Prefix) bool { return p.Contains(to) && p.Addr() != to }) || to.Zone() != "" {
			return invalid("address %v is not a host address of %v", to, o.ent)
		}
		return o.publish(ports, to)
	})
}

// sysUnpublish is Rules.Unpublish on Linux.
func (r *Rules) sysUnpublish(to netip.Addr, ports []Port) error {
	return r.rec().portsOp("unpublish", ports, func(o *owned) error { return o.unpublishPorts(ports, to) })
}

// unpublishPorts removes the mappings of ports (to the address to; the
// zero Addr: to any).
func (o *owned) unpublishPorts(ports []Port, to netip.Addr) error {
	var gone []nftset.PortMap
	for _, p := range ports {
		for _, pm := range o.ent.Ports {
			if p.matches(pm) && (!to.IsValid() || pm.To == to) {
				gone = append(gone, pm)
			}
		}
	}
	if len(gone) == 0 {
		return fmt.Errorf("%v %w", ports, os.ErrNotExist)
	}
	return o.unpublish(gone)
}

// sysImpair is Impair on Linux: the host end's root qdisc shapes what goes
// to the namespace, the namespace end's what comes from it (by index).
func (l *Link) sysImpair(toNS, fromNS qdisc.Impairment) error {
	return l.rec().portsOp("impair", nil, func(o *owned) error { return qdisc.SetPair(o.host, o.hostIdx, toNS, o.nsRef, o.nsIdx, fromNS) })
}

// portsOp checks the ports and runs fn with o locked and open.
func (o *owned) portsOp(verb string, ports []Port, fn func(*owned) error) error {
	for _, p := range ports {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("nat: %s: %w", verb, err)
		}
	}
	if o == nil {
		return fmt.Errorf("nat: %s on a link not made by Connect or AddRules: %w", verb, os.ErrInvalid)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || o.hs == nil {
		return fmt.Errorf("nat: %s on %s: %w", verb, o.what(), os.ErrClosed)
	}
	o.hs.restoreMu.RLock() // (see hostState.restoreMu)
	defer o.hs.restoreMu.RUnlock()
	if err := fn(o); err != nil {
		return fmt.Errorf("nat: %s on %s: %w", verb, o.what(), err)
	}
	return nil
}

// matches reports whether pm is one of p's ports.
func (p Port) matches(pm nftset.PortMap) bool {
	n := uint16(max(int(p.Count), 1))
	return pm.Proto == p.protoNum() && (!p.HostAddr.IsValid() || p.HostAddr == pm.Addr) &&
		pm.Port >= p.HostPort && pm.Port-p.HostPort < n
}

// expandPorts resolves ports into mappings (see hostview.ExpandPorts).
func expandPorts(host *netns.Handle, hc *nl.Conn, uplink int, fams []byte, have []nftset.PortMap, ports []Port, probe bool) ([]nftset.PortMap, error) {
	reqs := make([]hostview.PortRequest, len(ports))
	for i, p := range ports {
		reqs[i] = hostview.PortRequest{Addr: p.HostAddr, Proto: p.protoNum(), Port: p.HostPort, NSPort: p.nsPort(),
			Count: uint16(max(int(p.Count), 1)), Name: p.String()}
	}
	return hostview.ExpandPorts(host, hc, uplink, fams, have, reqs, probe)
}

// publish adds the ports to a live link, all or none, to the address to
// (in its family only), or to the namespace's (the zero Addr). The caller
// holds l.mu.
func (l *owned) publish(ports []Port, to netip.Addr) error {
	host, hs := l.host, l.hs
	hc, err := hs.tbl.Conn(host)
	if err != nil {
		return err
	}
	defer hs.tbl.PutConn(hc)
	fams := l.ent.Families()
	if to.IsValid() {
		fams = []byte{nftset.FamilyOf(to)}
	}
	maps, err := expandPorts(host, hc, l.ent.Uplink, fams, l.ent.Ports, ports, !l.portsReserved)
	if err != nil {
		return err
	}
	for i := range maps {
		maps[i].To = to
	}
	var b nftset.Batch
	var els []nftset.Elem
	for _, pm := range maps {
		els = append(els, pm.Elems(l.ent)...)
	}
	if err := b.Add(els, true); err != nil {
		return err
	}
	if err := hs.tbl.CommitEntries(host, &b); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("a port published already (by this process or another): %w", os.ErrExist)
		}
		return err
	}
	if slices.ContainsFunc(maps, nftset.PortMap.Loopback) {
		if err := hc.Exec(nl.SetRouteLocalnet(l.hostIdx, true)); err != nil {
			hs.tbl.Del(host, els)
			return fmt.Errorf("route_localnet: %w", err)
		}
	}
	l.ent.Ports = append(l.ent.Ports, maps...)
	hs.tbl.WithConntrack(host, func(c *conntrack.Conn) error { flows.ForgetUntranslated(c, maps); return nil })
	return nil
}

// unpublish removes the ports and forgets their connections.
func (l *owned) unpublish(maps []nftset.PortMap) error {
	var els []nftset.Elem
	for _, pm := range maps {
		els = append(els, pm.Elems(l.ent)...)
	}
	err := l.hs.tbl.Del(l.host, els)
	l.ent.Ports = slices.DeleteFunc(l.ent.Ports, func(x nftset.PortMap) bool { return slices.Contains(maps, x) })
	return errors.Join(err, l.hs.tbl.WithConntrack(l.host, func(c *conntrack.Conn) error { return flows.ForgetPorts(c, maps) }))
}

// ports are the published ports (to the address to; the zero Addr: all).
func (o *owned) ports(to netip.Addr) []Port {
	if o == nil {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []Port
	for _, pm := range o.ent.Ports {
		if !to.IsValid() || pm.To == to {
			out = append(out, portOf(pm))
		}
	}
	return out
}

// portOf is the Port of a published port's entries.
func portOf(pm nftset.PortMap) Port {
	proto := "tcp"
	if pm.Proto == unix.IPPROTO_UDP {
		proto = "udp"
	}
	return Port{Protocol: proto, HostAddr: pm.Addr, HostPort: pm.Port, NSPort: pm.NSPort}
}

// sysLinks is Links on Linux.
func sysLinks(hostNS *netns.Handle) ([]LinkInfo, error) {
	host, err := openHost(hostNS)
	if err != nil {
		return nil, err
	}
	defer host.Close()
	es, err := sweep.Inventory(host)
	out := make([]LinkInfo, 0, len(es))
	for _, e := range es {
		li := LinkInfo{HostVeth: e.HostVeth, Index: e.Index, Owner: e.Mark.ID, PID: e.Mark.PID, Alive: e.Alive,
			Persistent: e.Mark.ID == owner.PersistentID, Tag: e.Mark.Tag, Namespace: e.PeerNS, Uplink: e.Uplink,
			Prefix: e.Prefix, Prefix6: e.Prefix6}
		for _, p := range e.Ports {
			li.Ports = append(li.Ports, portOf(p.PortMap))
		}
		out = append(out, li)
	}
	return out, err
}

// protoNum is the port's protocol number (unix.IPPROTO_TCP or _UDP).
func (p Port) protoNum() uint8 {
	if p.proto() == "udp" {
		return unix.IPPROTO_UDP
	}
	return unix.IPPROTO_TCP
}
