package nat

// Published ports (Port). Each mapping is two entries: in the ports map
// (host address . protocol . port : namespace address . port), which the
// prerouting and output chains' DNAT reads, and in port_links (same key :
// the host end's index), with which the same rule marks the connection, so
// that Close and Unpublish find its conntrack entries (see flows.Forget).
// Both are added with NLM_F_EXCL in one transaction: a port published
// already, by this process or another, is refused by the kernel (EEXIST,
// os.ErrExist), atomically. The forward chain accepts connections whose
// destination was translated (ct status dnat) towards a link; postrouting
// masquerades the two cases whose replies would not come back through the
// host otherwise: a link to a port of its own (hairpin, the "same" set)
// and the host's 127.0.0.1 (for which the host end gets route_localnet,
// and the raw_prerouting chain drops loopback destinations arriving from
// any link).

import (
	"errors"
	"fmt"
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

// sysPublish is Publish on Linux.
func (l *Link) sysPublish(ports []Port) error {
	return l.portsOp("publish", ports, func() error { return l.publish(ports) })
}

// sysUnpublish is Unpublish on Linux.
func (l *Link) sysUnpublish(ports []Port) error {
	return l.portsOp("unpublish", ports, func() error {
		var gone []nftset.PortMap
		for _, p := range ports {
			for _, pm := range l.ent.Ports {
				if p.matches(pm) {
					gone = append(gone, pm)
				}
			}
		}
		if len(gone) == 0 {
			return fmt.Errorf("%v %w", ports, os.ErrNotExist)
		}
		return l.unpublish(gone)
	})
}

// sysImpair is Impair on Linux: the host end's root qdisc shapes what goes
// to the namespace, the namespace end's what comes from it (by index).
func (l *Link) sysImpair(toNS, fromNS qdisc.Impairment) error {
	return l.portsOp("impair", nil, func() error { return qdisc.SetPair(l.host, l.hostIdx, toNS, l.nsRef, l.nsIdx, fromNS) })
}

// portsOp checks the ports and runs fn with the link locked and open.
func (l *Link) portsOp(verb string, ports []Port, fn func() error) error {
	if l == nil {
		return fmt.Errorf("nat: %s on a nil *Link: %w", verb, os.ErrInvalid)
	}
	for _, p := range ports {
		if err := p.validate(); err != nil {
			return fmt.Errorf("nat: %s: %w", verb, err)
		}
	}
	if l.owned == nil {
		return fmt.Errorf("nat: %s on a link not made by Connect: %w", verb, os.ErrInvalid)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.hs == nil {
		return fmt.Errorf("nat: %s on %s: %w", verb, l.what(), os.ErrClosed)
	}
	l.hs.restoreMu.RLock() // (see hostState.restoreMu)
	defer l.hs.restoreMu.RUnlock()
	if err := fn(); err != nil {
		return fmt.Errorf("nat: %s on %s: %w", verb, l.what(), err)
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

// publish adds the ports to a live link, all or none. The caller holds
// l.mu.
func (l *Link) publish(ports []Port) error {
	host, hs := l.host, l.hs
	hc, err := hs.tbl.Conn(host)
	if err != nil {
		return err
	}
	defer hs.tbl.PutConn(hc)
	maps, err := expandPorts(host, hc, l.ent.Uplink, l.ent.Families(), l.ent.Ports, ports, !l.portsReserved)
	if err != nil {
		return err
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
func (l *Link) unpublish(maps []nftset.PortMap) error {
	var els []nftset.Elem
	for _, pm := range maps {
		els = append(els, pm.Elems(l.ent)...)
	}
	err := l.hs.tbl.Del(l.host, els)
	l.ent.Ports = slices.DeleteFunc(l.ent.Ports, func(x nftset.PortMap) bool { return slices.Contains(maps, x) })
	return errors.Join(err, l.hs.tbl.WithConntrack(l.host, func(c *conntrack.Conn) error { return flows.ForgetPorts(c, maps) }))
}

// sysPorts is Ports on Linux.
func (l *Link) sysPorts() []Port {
	if l == nil || l.owned == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Port
	for _, pm := range l.ent.Ports {
		out = append(out, portOf(pm))
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
