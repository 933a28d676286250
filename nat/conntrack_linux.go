package nat

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
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
func forgetFlows(host *netns.Handle, links ...int) error {
	if len(links) == 0 {
		return nil
	}
	cfg, err := nl.Config(host)
	if err != nil {
		return err
	}
	c, err := conntrack.Dial(cfg)
	runtime.KeepAlive(host)
	if err != nil {
		return fmt.Errorf("dial conntrack: %w", err)
	}
	defer c.Close()
	var errs []error
	for _, l := range links {
		if err := c.FlushFilter(conntrack.NewFilter().Family(netfilter.ProtoIPv4).Mark(uint32(l))); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("delete conntrack entries: %w", errors.Join(errs...))
	}
	return nil
}
