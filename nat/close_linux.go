package nat

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/addrplan"
	"github.com/nsnet/nsnet/nat/internal/naterr"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/netns"
)

// sysClose is Close on Linux.
func (l *Link) sysClose() error {
	if l == nil {
		return fmt.Errorf("nat: close of a nil *Link: %w", os.ErrInvalid)
	}
	if l.owned == nil {
		return fmt.Errorf("nat: close link: not made by Connect: %w", os.ErrInvalid)
	}
	return l.owned.close("nat: close "+l.owned.what(), true)
}

// quiesce is the first step of every undo of a link (Close, CloseAll,
// Remove, a failed Connect): it deletes the veth pairs whose host ends are
// links, with one request, and returns once the kernel has unlisted them
// (see nl.DeleteLinks): from then on no packet passes through them, in
// either direction or family, their names and addresses are free, and
// nothing of them is left if the process exits. Only then do the entries
// that masquerade and filter their packets go, so that no packet of a link
// is ever forwarded without them. gone says, per link, that its host end
// was gone already (with its namespace, or deleted by someone else). after
// runs once the kernel acknowledged the delete (see nl.DeleteLinks).
func quiesce(host *netns.Handle, hc *nl.Conn, links []int, after func()) (gone []bool, err error) {
	errs, err := nl.DeleteLinks(host, hc, links, after)
	gone = make([]bool, len(links))
	for i, e := range errs {
		switch {
		case errors.Is(e, os.ErrNotExist):
			gone[i] = true
		case e != nil:
			err = errors.Join(err, e)
		}
	}
	return gone, err
}

// what names the link in Close's errors, from the record.
func (o *owned) what() string {
	if o.hs == nil {
		return "link"
	}
	return fmt.Sprintf("%v (%s)", o.ent, o.vethName)
}

// close undoes what o holds; deleteVeth says the host end is the
// library's to delete (not for Rules), with closeSteps.
func (o *owned) close(what string, deleteVeth bool) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return o.err
	}
	o.closed = true
	if o.hs == nil {
		o.err = fmt.Errorf("%s: not made by Connect or AddRules: %w", what, os.ErrInvalid)
		return o.err
	}
	if o.persistent {
		if _, err := removePersistent(context.Background(), o.host, o.hostIdx, o.vethName); err != nil {
			o.err = fmt.Errorf("%s: %w", what, err)
		}
		o.host.Close()
		o.nsRef.Close()
		return o.err
	}
	if err := closeSteps(o.hs, []*owned{o}, deleteVeth); err != nil {
		o.err = fmt.Errorf("%s: %w", what, err)
	}
	return o.err
}

// closeSteps undoes the links (Links or Rules, all of one host state, each
// locked and marked closed by the caller), in the order that keeps every
// guarantee, for Close and CloseAll alike:
//
//  1. DNS: the relay stopped, the resolv.conf removed;
//  2. quiesce: the pairs deleted and unlisted (Links), or the forwarding
//     AddRules turned on turned off (Rules): nothing passes any more;
//  3. conntrack: the links' connections forgotten (see flows.Forget);
//  4. DOCKER-USER rules removed;
//  5. nftables: the set entries removed, and each uplink forwarding that
//     no nsnet link uses any more given back;
//  6. the prefixes released, and after the process's last link in the
//     host its table (if no other process has entries in it) and its
//     sockets (after the delete's grace period: see nl.DeleteLinks).
//
// A failed step does not stop the others; the errors are joined.
func closeSteps(hs *hostState, links []*owned, deleteVeth bool) error {
	hs.restoreMu.RLock() // (see hostState.restoreMu)
	defer hs.restoreMu.RUnlock()
	for _, o := range links {
		hs.removeLive(o)
	}
	host := links[0].host
	var errs []error
	step := func(name string, f func() error) {
		err := hook("close " + name)
		if err == nil {
			err = f()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	errs = append(errs, stopDNS(links)...)
	hc, err := hs.tbl.Conn(host)
	if err != nil {
		errs = append(errs, fmt.Errorf("netlink: %w", err))
	}
	idx := make([]int, 0, len(links))
	for _, o := range links {
		idx = append(idx, o.hostIdx)
	}
	// The sockets left idle by the last link are closed once the delete is
	// acknowledged (see leave); sent exactly once, below.
	idle := make(chan idleSockets, len(links))
	closeIdle := func() {
		for range links {
			(<-idle).close()
		}
	}
	deleting, quiet := false, hc != nil
	if hc != nil {
		n := len(errs)
		step("quiesce", func() error {
			if !deleteVeth {
				return rulesForwardingOff(hc, links)
			}
			deleting = true
			gone, err := quiesce(host, hc, idx, func() { go closeIdle() })
			for i, g := range gone {
				if g {
					o := links[i]
					err = errors.Join(err, fmt.Errorf("veth %s (index %d) %w", o.vethName, o.hostIdx, naterr.ErrGone))
				}
			}
			return err
		})
		if deleteVeth && len(errs) > n && !errors.Is(errs[n], naterr.ErrGone) {
			// Not deleted: down and not forwarding at least, or its entries
			// stay, so that its packets are still filtered.
			quiet = nl.StopLinks(hc, idx) == nil
		}
	}
	step("conntrack", func() error { return hs.forgetLinkFlows(host, links) })
	comments := map[string]int{}
	for _, o := range links {
		if o.dockerUser != "" {
			comments[o.dockerUser] = 2 * len(o.dockerFams)
		}
	}
	if len(comments) > 0 {
		step("docker-user", func() error { return hs.dropDockerUser(host, comments) })
	}
	if quiet {
		step("nftables", func() error {
			es := make([]nftset.Entries, len(links))
			for i, o := range links {
				es[i] = o.ent
			}
			return hs.shares.RemoveAll(host, hc, &hs.tbl, es)
		})
	} else {
		errs = append(errs, errors.New("nftables: entries kept: the links could not be stopped"))
	}
	if hc != nil {
		hs.tbl.PutConn(hc)
	}
	errs = append(errs, hs.leaveAll(links, idle)...)
	if !deleting {
		go closeIdle() // closing an nftables socket may wait for a grace period
	}
	return errors.Join(errs...)
}

// stopDNS stops the links' DNS (see dns.Setup.Stop).
func stopDNS(links []*owned) (errs []error) {
	for _, o := range links {
		// (A failure injected by a test still stops it.)
		if err := errors.Join(hook("close dns"), o.dns.Stop()); err != nil {
			errs = append(errs, fmt.Errorf("dns: %w", err))
		}
		o.dns = nil
	}
	return errs
}

// leaveAll releases the links' prefixes, uncounts them from the host state
// (the last one's idle sockets go to idle, one value per link) and closes
// their namespace handles.
func (hs *hostState) leaveAll(links []*owned, idle chan<- idleSockets) (errs []error) {
	for _, o := range links {
		addrplan.Release(o.hostKey, o.nsKey, o.ent.Prefixes)
		socks, err := hs.leave(o.host)
		if err != nil {
			errs = append(errs, fmt.Errorf("nftables table: %w", err))
		}
		idle <- socks
		if !o.sharedHost {
			o.host.Close()
		}
		o.nsRef.Close()
	}
	return errs
}

// rulesForwardingOff turns back off the forwarding of the Rules' links
// that AddRules turned on, as AddRules found them.
func rulesForwardingOff(hc *nl.Conn, links []*owned) error {
	var errs []error
	for _, o := range links {
		for _, fam := range o.linkFwdOff {
			errs = append(errs, nl.SetLinkForwarding(o.host, hc, o.hostIdx, fam, false))
		}
	}
	return errors.Join(errs...)
}
