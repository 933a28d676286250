package flows

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/netns"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
)

// Forget deletes the host's connection tracking entries of the
// connections that the links (by host end index) opened. A closed link's
// entries would otherwise outlive it: the outside's packets to a
// masqueraded port would still be translated back to the namespace's
// address, and reach whatever namespace holds the prefix next (a UDP flow
// keeps its entry alive as long as packets come). The from_link chain
// marks the connection of every packet from a link with the link's index
// (ct mark; every packet, not only a connection's first, so that an entry
// a link takes over from an earlier one is marked as its own too), so
// the kernel finds them itself: a flush filtered by mark costs tens of
// microseconds, where dumping the table to pick them out walked every
// bucket of it, empty ones too (see README, Benchmarks). Called once the
// link is quiesced, so no new entry can appear for it.
//
// The conntrack socket is a netfilter one: closing it makes the kernel
// finish nf_tables' pending destroy work first, an RCU grace period after
// any commit that deleted something (each Close's). So a host state keeps
// its socket with its other idle ones (see table.Host.WithConntrack), closed after
// the veths are deleted; only Sweep dials one for itself.
func Forget(host *netns.Handle, links ...int) error {
	if len(links) == 0 {
		return nil
	}
	c, err := Dial(host)
	if err != nil {
		return err
	}
	defer c.Close()
	return ForgetMarked(c, links...)
}

func Dial(host *netns.Handle) (*conntrack.Conn, error) {
	cfg, err := nl.Config(host)
	if err != nil {
		return nil, err
	}
	c, err := conntrack.Dial(cfg)
	runtime.KeepAlive(host)
	if err != nil {
		return nil, fmt.Errorf("dial conntrack: %w", err)
	}
	return c, nil
}

// ForgetMarked flushes the entries marked with each link's index, of
// both families (a filter without a family matches every family).
func ForgetMarked(c *conntrack.Conn, links ...int) error {
	var errs []error
	for _, l := range links {
		if err := c.FlushFilter(conntrack.NewFilter().Mark(uint32(l))); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("delete conntrack entries: %w", errors.Join(errs...))
	}
	return nil
}

// Own marks the host's connection from local to remote (protocol proto,
// its original direction) with the link's index, so that the link's Close,
// or a Sweep after a crash, forgets it with the link's other connections:
// the DNS relay's connections to the host's resolver on loopback, which
// no rule marks (loopback is no link's). The connection's first packet
// must have been sent (its entry exists once the send returns); an entry
// gone meanwhile is no error.
func Own(c *conntrack.Conn, proto uint8, local, remote netip.AddrPort, link int) error {
	f := conntrack.NewFlow(proto, 0, local.Addr().Unmap(), remote.Addr().Unmap(), local.Port(), remote.Port(), 0, uint32(link))
	if err := c.Update(f); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("mark conntrack entry: %w", err)
	}
	return nil
}

// Marker marks connections with one index (see Own) on a socket of its
// own, dialled at its first mark and kept until Close, one mark at a time:
// for a server of a part of nsnet that has no pool of sockets (a
// network's name server, whose connections carry its bridge's index).
type Marker struct {
	index  int
	mu     sync.Mutex
	c      *conntrack.Conn
	closed bool
}

// NewMarker returns a Marker of index.
func NewMarker(index int) *Marker { return &Marker{index: index} }

// Own marks the connection (see Own), dialling the socket in host first
// if need be; best effort: a connection it cannot mark stays unmarked.
func (m *Marker) Own(host *netns.Handle, proto uint8, local, remote netip.AddrPort) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	if m.c == nil {
		c, err := Dial(host)
		if err != nil {
			return
		}
		m.c = c
	}
	if Own(m.c, proto, local, remote, m.index) != nil {
		m.c.Close() // it may hold a stale reply
		m.c = nil
	}
}

// Close closes the socket; Own does nothing from then on.
func (m *Marker) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	if m.c != nil {
		m.c.Close()
	}
}

// ForgetUntranslated deletes the conntrack entries of flows to the ports
// that were set up before the ports were published, untranslated: the
// kernel translates only a connection's first packet, so a UDP client that
// kept sending to the port (refused until now) would never reach the
// namespace. It dumps the entries without a mark (the kernel filters), so
// it costs a walk of the host's conntrack table; best effort: a failure
// leaves such a client as it was.
func ForgetUntranslated(c *conntrack.Conn, maps []nftset.PortMap) {
	deletePortFlows(c, maps, conntrack.NewFilter().Mark(0), false)
}

// ForgetPorts deletes the conntrack entries of connections to the
// ports, whoever made them: the outside's carry the publishing link's
// index as their mark (the DNAT rule sets it), but another link's carry
// that link's (from_link marks every packet of a link's connections with
// its own), so they are found by what all have in common: a translated
// destination that is one of the ports. The kernel filters the dump by
// the DNAT status (Linux 5.15+; older kernels dump everything, and the
// status is checked here too).
func ForgetPorts(c *conntrack.Conn, maps []nftset.PortMap) error {
	return deletePortFlows(c, maps, conntrack.NewFilter().Status(conntrack.StatusDstNAT), true)
}

// deletePortFlows deletes the entries that filter selects, per family of
// maps, whose original destination is one of the ports and whose
// destination was translated (translated) or not.
func deletePortFlows(c *conntrack.Conn, maps []nftset.PortMap, filter conntrack.Filter, translated bool) error {
	var fams []netfilter.ProtoFamily
	for _, fam := range []netfilter.ProtoFamily{netfilter.ProtoIPv4, netfilter.ProtoIPv6} {
		if slices.ContainsFunc(maps, func(pm nftset.PortMap) bool { return pm.Addr.Is6() == (fam == netfilter.ProtoIPv6) }) {
			fams = append(fams, fam)
		}
	}
	return deleteMatching(c, filter, fams, func(f conntrack.Flow) bool {
		o := f.TupleOrig
		return f.Status.DstNAT() == translated && slices.ContainsFunc(maps, func(pm nftset.PortMap) bool {
			return o.Proto.Protocol == pm.Proto && o.Proto.DestinationPort == pm.Port && o.IP.DestinationAddress == pm.Addr
		})
	})
}

// deleteMatching dumps the entries that filter selects (the kernel
// filters) in each family of fams and deletes those that match; entries
// gone meanwhile are no error.
func deleteMatching(c *conntrack.Conn, filter conntrack.Filter, fams []netfilter.ProtoFamily, match func(conntrack.Flow) bool) error {
	var errs []error
	for _, fam := range fams {
		fs, err := c.DumpFilter(filter.Family(fam), nil)
		if err != nil {
			return fmt.Errorf("conntrack: %w", err)
		}
		for _, f := range fs {
			if match(f) {
				if err := c.Delete(f); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// ForgetAddrs deletes the entries marked with one of marks (a bridge's
// index: the connections of all its members; 0: the host's own, such as
// its connections with the members) that an address of match began or
// answered: the connections of the members of a network, whose addresses
// the next member given them must not inherit. The kernel filters by mark.
func ForgetAddrs(c *conntrack.Conn, marks []uint32, match func(netip.Addr) bool) error {
	var errs []error
	for _, mark := range marks {
		errs = append(errs, deleteMatching(c, conntrack.NewFilter().Mark(mark), []netfilter.ProtoFamily{netfilter.ProtoIPv4, netfilter.ProtoIPv6},
			func(f conntrack.Flow) bool {
				return match(f.TupleOrig.IP.SourceAddress) || match(f.TupleReply.IP.SourceAddress)
			}))
	}
	return errors.Join(errs...)
}
