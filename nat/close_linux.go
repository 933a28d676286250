package nat

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/nsnet/nsnet/internal/nl"
)

// Close undoes everything Connect made: it deletes the veth pair, which
// takes its addresses and the namespace's route with it, then, in one
// nftables transaction, removes the link's set entries and its share of the
// uplink (whose forwarding goes back to what it was when no nsnet process
// uses it any more), and after the process's last link, when no other
// process has entries in it, the library's table. For the process's last
// link in the host the nftables steps come first and the veth last: its
// Close closes the library's nftables sockets, and the kernel makes that
// wait for an RCU grace period after a commit that deleted anything, which
// the veth delete then covers; in the millisecond between, that link's
// packets are no longer filtered or masqueraded. The namespace itself
// belongs to the caller and stays, with lo up. Close goes on after a
// failed step and returns all errors joined. It is idempotent: a second
// call returns the first call's result. Safe for concurrent use.
func (l *Link) Close() error { return l.owned.close(l.Prefix, l.HostVeth, l.Uplink) }

// close removes the elements, deletes vethToDelete if not "", and releases
// the uplink and the prefix.
func (o *owned) close(prefix netip.Prefix, vethToDelete, uplinkName string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return o.err
	}
	o.closed = true
	var errs []error
	fault := func(step string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", step, err))
		}
	}
	hs := o.hs
	release(o.hostKey, o.nsKey, prefix)
	hc, err := hs.conn(o.host)
	fault("netlink", err)
	// The veth and the nftables steps one after the other, not side by
	// side: the kernel makes an nftables commit wait while a link is being
	// unregistered, so overlapping them only made both slower. The veth
	// goes first, so the link is never there unfiltered, except for the
	// last link (see Close). Each step goes on after a failed one; the
	// test hooks can fail any of them.
	deleteVeth := func() {
		if hc == nil || vethToDelete == "" {
			return
		}
		err := hook("close veth")
		if err == nil {
			err = hc.Exec(nl.DeleteLink(0, vethToDelete))
		}
		fault("veth", err)
	}
	vethFirst := !hs.lastLink()
	if vethFirst {
		deleteVeth()
	}
	if hc != nil {
		errU, errN := hook("close uplink forwarding"), hook("close nftables")
		fault("uplink forwarding", errU)
		fault("nftables", errN)
		e := o.elems
		if errN != nil {
			e = elements{} // the fault leaves the entries
		}
		switch {
		case errU == nil:
			fault("uplink forwarding and nftables", hs.releaseUplink(hc, o.host, o.uplinkIdx, uplinkName, e))
		case !e.empty():
			fault("nftables", hs.flush(o.host, func(c *nftables.Conn) error { return e.apply(c, false) }))
		}
	}
	socks, err := hs.leave(o.host)
	fault("nftables table", err)
	if !vethFirst {
		deleteVeth()
	}
	if hc != nil {
		hs.putConn(hc)
	}
	socks.close() // after the veth delete: see nftSockets
	o.host.Close()
	o.nsRef.Close()
	if len(errs) > 0 {
		o.err = fmt.Errorf("nat: close %v: %w", prefix, errors.Join(errs...))
	}
	return o.err
}
