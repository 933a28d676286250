package nat

// Published ports (Port). Each mapping is two entries: in the ports map
// (host address . protocol . port : namespace address . port), which the
// prerouting and output chains' DNAT reads, and in port_links (same key :
// the host end's index), with which the same rule marks the connection, so
// that Close and Unpublish find its conntrack entries (see forgetFlows).
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
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"net/netip"
	"os"
	"slices"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
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
	proto := uint8(unix.IPPROTO_TCP)
	if p.Protocol == "udp" {
		proto = unix.IPPROTO_UDP
	}
	n := uint16(max(int(p.Count), 1))
	return pm.Proto == proto && (!p.HostAddr.IsValid() || p.HostAddr == pm.Addr) &&
		pm.Port >= p.HostPort && pm.Port-p.HostPort < n
}

// expandPorts resolves ports into mappings for a link of the families
// fams (every address of the uplink of those families for one without an
// address: IPv4's, and IPv6's global ones; each port of a range), refusing
// one twice or one in have (os.ErrExist), and probes the host's sockets
// (see probePorts).
func expandPorts(host *netns.Handle, hc *nl.Conn, uplink int, fams []byte, have []nftset.PortMap, ports []Port) ([]nftset.PortMap, error) {
	var uplinkAddrs []netip.Addr
	var maps []nftset.PortMap
	same := func(x, y nftset.PortMap) bool { return x.Addr == y.Addr && x.Proto == y.Proto && x.Port == y.Port }
	for _, p := range ports {
		addrs := []netip.Addr{p.HostAddr}
		if !p.HostAddr.IsValid() {
			if uplinkAddrs == nil {
				var err error
				if uplinkAddrs, err = hostAddrs(hc, uplink, fams); err != nil {
					return nil, fmt.Errorf("uplink addresses: %w", err)
				}
				if len(uplinkAddrs) == 0 {
					return nil, fmt.Errorf("%w: the uplink has no address to publish %v on", ErrInvalidConfig, p)
				}
			}
			addrs = uplinkAddrs
		} else if fam := nftset.FamilyOf(p.HostAddr); !slices.Contains(fams, fam) {
			return nil, fmt.Errorf("%w: port %v: the link has no %s network", ErrInvalidConfig, p, nftset.FamilyName(fam))
		}
		proto := uint8(unix.IPPROTO_TCP)
		if p.Protocol == "udp" {
			proto = unix.IPPROTO_UDP
		}
		for _, a := range addrs {
			for i := range uint16(max(int(p.Count), 1)) {
				pm := nftset.PortMap{Addr: a, Proto: proto, Port: p.HostPort + i, NSPort: p.nsPort() + i}
				if slices.ContainsFunc(maps, func(x nftset.PortMap) bool { return same(x, pm) }) ||
					slices.ContainsFunc(have, func(x nftset.PortMap) bool { return same(x, pm) }) {
					return nil, fmt.Errorf("%v: published already: %w", pm, os.ErrExist)
				}
				maps = append(maps, pm)
			}
		}
	}
	return maps, probePorts(host, maps)
}

// publish adds the ports to a live link, all or none. The caller holds
// l.mu.
func (l *Link) publish(ports []Port) error {
	host, hs := l.host, l.hs
	hc, err := hs.conn(host)
	if err != nil {
		return err
	}
	defer hs.putConn(hc)
	maps, err := expandPorts(host, hc, l.ent.Uplink, l.ent.Families(), l.ent.Ports, ports)
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
	if err := hs.commitEntries(host, &b); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("a port published already (by this process or another): %w", os.ErrExist)
		}
		return err
	}
	if slices.ContainsFunc(maps, nftset.PortMap.Loopback) {
		if err := hc.Exec(nl.SetRouteLocalnet(l.hostIdx, true)); err != nil {
			hs.delEntries(host, els)
			return fmt.Errorf("route_localnet: %w", err)
		}
	}
	l.ent.Ports = append(l.ent.Ports, maps...)
	hs.withConntrack(host, func(c *conntrack.Conn) error { forgetUntranslated(c, maps); return nil })
	return nil
}

// forgetUntranslated deletes the conntrack entries of flows to the ports
// that were set up before the ports were published, untranslated: the
// kernel translates only a connection's first packet, so a UDP client that
// kept sending to the port (refused until now) would never reach the
// namespace. It dumps the entries without a mark (the kernel filters), so
// it costs a walk of the host's conntrack table; best effort: a failure
// leaves such a client as it was.
func forgetUntranslated(c *conntrack.Conn, maps []nftset.PortMap) {
	deletePortFlows(c, maps, conntrack.NewFilter().Mark(0), false)
}

// unpublish removes the ports and forgets their connections.
func (l *Link) unpublish(maps []nftset.PortMap) error {
	var els []nftset.Elem
	for _, pm := range maps {
		els = append(els, pm.Elems(l.ent)...)
	}
	err := l.hs.delEntries(l.host, els)
	l.ent.Ports = slices.DeleteFunc(l.ent.Ports, func(x nftset.PortMap) bool { return slices.Contains(maps, x) })
	return errors.Join(err, l.hs.withConntrack(l.host, func(c *conntrack.Conn) error { return forgetPortFlows(c, maps) }))
}

// probePorts fails with os.ErrExist for a port a socket of the host
// already has (binding a socket to it is refused: EADDRINUSE), and with
// ErrInvalidConfig for an address that is not the host's.
func probePorts(host *netns.Handle, maps []nftset.PortMap) error {
	return host.Do(func() error {
		for _, pm := range maps {
			typ := unix.SOCK_STREAM
			if pm.Proto == unix.IPPROTO_UDP {
				typ = unix.SOCK_DGRAM
			}
			family := unix.AF_INET6
			var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: pm.Addr.As16(), Port: int(pm.Port)}
			if pm.Addr.Is4() {
				family, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: pm.Addr.As4(), Port: int(pm.Port)}
			}
			fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			err = unix.Bind(fd, sa)
			unix.Close(fd)
			switch {
			case err == unix.EADDRINUSE:
				return fmt.Errorf("%v: a socket of the host uses it: %w", pm, os.ErrExist)
			case err == unix.EADDRNOTAVAIL:
				return fmt.Errorf("%w: %v: %v is not an address of the host", ErrInvalidConfig, pm, pm.Addr)
			case err != nil && err != unix.EACCES:
				return fmt.Errorf("%v: %w", pm, err)
			}
		}
		return nil
	})
}

// hostAddrs lists the addresses of the link with the index in the
// families fams: IPv4's, and IPv6's global ones.
func hostAddrs(hc *nl.Conn, index int, fams []byte) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, fam := range fams {
		af := unix.AF_INET
		if fam == unix.NFPROTO_IPV6 {
			af = unix.AF_INET6
		}
		msgs, err := hc.Dump(nl.DumpAddrs(uint8(af), index))
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			var am rtnetlink.AddressMessage
			if err := am.UnmarshalBinary(m.Data); err != nil {
				return nil, err
			}
			if int(am.Index) != index || am.Attributes == nil {
				continue
			}
			ip := am.Attributes.Local
			if ip == nil {
				ip = am.Attributes.Address
			}
			a := nl.IPToAddr(ip)
			if (a.Is4() && af == unix.AF_INET) || (a.Is6() && af == unix.AF_INET6 && !a.IsLinkLocalUnicast() && !a.IsLoopback()) {
				out = append(out, a)
			}
		}
	}
	return out, nil
}

// forgetPortFlows deletes the conntrack entries of connections to the
// ports, whoever made them: the outside's carry the publishing link's
// index as their mark (the DNAT rule sets it), but another link's carry
// that link's (from_link marks every packet of a link's connections with
// its own), so they are found by what all have in common: a translated
// destination that is one of the ports. The kernel filters the dump by
// the DNAT status (Linux 5.15+; older kernels dump everything, and the
// status is checked here too).
func forgetPortFlows(c *conntrack.Conn, maps []nftset.PortMap) error {
	return deletePortFlows(c, maps, conntrack.NewFilter().Status(conntrack.StatusDstNAT), true)
}

// deletePortFlows deletes the entries that filter selects, per family of
// maps, whose original destination is one of the ports and whose
// destination was translated (translated) or not.
func deletePortFlows(c *conntrack.Conn, maps []nftset.PortMap, filter conntrack.Filter, translated bool) error {
	var flows []conntrack.Flow
	for _, fam := range []netfilter.ProtoFamily{netfilter.ProtoIPv4, netfilter.ProtoIPv6} {
		if !slices.ContainsFunc(maps, func(pm nftset.PortMap) bool { return pm.Addr.Is6() == (fam == netfilter.ProtoIPv6) }) {
			continue
		}
		fs, err := c.DumpFilter(filter.Family(fam), nil)
		if err != nil {
			return fmt.Errorf("conntrack: %w", err)
		}
		flows = append(flows, fs...)
	}
	var errs []error
	for _, f := range flows {
		if f.Status.DstNAT() != translated {
			continue
		}
		o := f.TupleOrig
		if slices.ContainsFunc(maps, func(pm nftset.PortMap) bool {
			return o.Proto.Protocol == pm.Proto && o.Proto.DestinationPort == pm.Port && o.IP.DestinationAddress == pm.Addr
		}) {
			if err := c.Delete(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
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
		proto := "tcp"
		if pm.Proto == unix.IPPROTO_UDP {
			proto = "udp"
		}
		out = append(out, Port{Protocol: proto, HostAddr: pm.Addr, HostPort: pm.Port, NSPort: pm.NSPort})
	}
	return out
}
