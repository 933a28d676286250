package nat

import (
	"errors"
	"fmt"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"runtime"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"github.com/ti-mo/conntrack"
)

// forgetFlows deletes the host's connection tracking entries of the
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
// its socket with its other idle ones (see hs.forgetFlows), closed after
// the veths are deleted; only Sweep dials one for itself.
func forgetFlows(host *netns.Handle, links ...int) error {
	if len(links) == 0 {
		return nil
	}
	c, err := dialConntrack(host)
	if err != nil {
		return err
	}
	defer c.Close()
	return forgetFlowsOn(c, links...)
}

func dialConntrack(host *netns.Handle) (*conntrack.Conn, error) {
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

// forgetFlows is forgetFlows on an idle conntrack socket of the host
// state.
func (hs *hostState) forgetFlows(host *netns.Handle, links ...int) error {
	if len(links) == 0 {
		return nil
	}
	return hs.withConntrack(host, func(c *conntrack.Conn) error { return forgetFlowsOn(c, links...) })
}

// forgetLinkFlows forgets the connections of closing links: those they
// made (see forgetFlows) and those made to their published ports, by the
// outside and by other links (see forgetPortFlows).
func (hs *hostState) forgetLinkFlows(host *netns.Handle, links []*owned) error {
	idx := make([]int, 0, len(links))
	var ports []nftset.PortMap
	for _, o := range links {
		idx = append(idx, o.hostIdx)
		ports = append(ports, o.ent.Ports...)
	}
	return hs.withConntrack(host, func(c *conntrack.Conn) error {
		err := forgetFlowsOn(c, idx...)
		if len(ports) > 0 {
			err = errors.Join(err, forgetPortFlows(c, ports))
		}
		return err
	})
}

// withConntrack runs fn with an idle conntrack socket of the host state
// (see forgetFlows: closing one can wait for a grace period).
func (hs *hostState) withConntrack(host *netns.Handle, fn func(*conntrack.Conn) error) error {
	c, ok := take(hs, &hs.cts)
	if !ok {
		var err error
		if c, err = dialConntrack(host); err != nil {
			return err
		}
	}
	err := fn(c)
	put(hs, &hs.cts, c, err != nil, func(c *conntrack.Conn) { c.Close() })
	return err
}

// forgetFlowsOn flushes the entries marked with each link's index, of
// both families (a filter without a family matches every family).
func forgetFlowsOn(c *conntrack.Conn, links ...int) error {
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
