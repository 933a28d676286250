package nat

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/nsnet/nsnet/internal/nl"
	"golang.org/x/sys/unix"
)

// sysClose is Close on Linux.
func (l *Link) sysClose() error {
	if l == nil {
		return fmt.Errorf("nat: close of a nil *Link: %w", os.ErrInvalid)
	}
	return l.owned.close("nat: close "+l.owned.what(), true)
}

// quiesce stops all traffic through a link and frees its names, in one
// round trip in each namespace: on the host end, IPv4 forwarding off and
// its addresses removed (which takes the routes to the namespace with
// them: nothing is forwarded to it, in either family) and a
// graveyard name, "nsd-" and random characters, so that its own is free at
// once; in the namespace, the peer down (which takes the namespace's
// routes through it with it: nothing passes either way) and renamed too.
// The pair itself is deleted later, by the reaper (see reaper_linux.go).
// A host end already gone is errGone; a namespace or peer gone is no
// matter.
func (o *owned) quiesce(hc *nl.Conn) error {
	// An IPv6 host end has IPv6 turned off instead, after the rename: that
	// removes its IPv6 addresses and routes at once, and spares the kernel
	// a walk of every IPv6 route of the host on each later change of the
	// link (its peer going down, its group, its delete; see
	// nl.PrepareLink). Its IPv4 forwarding is not needed off then: with
	// no address and the peer down nothing passes.
	_, v6 := o.nets.of(unix.NFPROTO_IPV6)
	var reqs []nl.Request
	if !v6 {
		reqs = append(reqs, nl.SetForwarding(o.hostIdx, false))
	}
	for _, n := range o.nets {
		if !v6 || n.fam() == unix.NFPROTO_IPV4 {
			reqs = append(reqs, n.delHost(o.hostIdx)...)
		}
	}
	grave := "nsd-" + randomString(11)
	reqs = append(reqs, nl.RenameLink(o.hostIdx, grave))
	_, errs, err := hc.Do(reqs...)
	if err != nil {
		return err
	}
	if errors.Is(errs[0], os.ErrNotExist) {
		return fmt.Errorf("veth %s (index %d) %w", o.vethName, o.hostIdx, errGone)
	}
	if rename := len(errs) - 1; errors.Is(errs[rename], unix.EBUSY) {
		// A kernel that renames only links that are down.
		errs[rename] = hc.Exec(nl.SetLinkUp(o.hostIdx, "", false), nl.RenameLink(o.hostIdx, grave))
	}
	for _, e := range errs {
		if e != nil && !errors.Is(e, os.ErrNotExist) {
			return e
		}
	}
	if v6 {
		if err := writeSysctl(o.host, confPath(unix.NFPROTO_IPV6, grave, "disable_ipv6"), "1"); err != nil {
			// (A name the library chose: the link's.) Without it, the
			// addresses go one by one.
			var dels []nl.Request
			for _, n := range o.nets {
				if n.fam() == unix.NFPROTO_IPV6 {
					dels = append(dels, n.delHost(o.hostIdx)...)
				}
			}
			if err := hc.Exec(dels...); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	nc, err := nl.Dial(o.nsRef)
	if err != nil {
		return nil // the namespace's end goes with the pair
	}
	defer nc.Close()
	nc.Do(nl.SetLinkUp(o.nsIdx, "", false), nl.RenameLink(o.nsIdx, "nsd-"+randomString(11)))
	return nil
}

// what names the link in Close's errors, from the record.
func (o *owned) what() string {
	if o.hs == nil {
		return "link"
	}
	return fmt.Sprintf("%v (%s)", o.ent, o.vethName)
}

// close undoes what o holds; deleteVeth says the host end is the
// library's to delete (not for Rules).
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
	o.hs.removeLive(o)
	var errs []error
	fault := func(step string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", step, err))
		}
	}
	hs, host := o.hs, o.host
	if err := hook("close dns"); err == nil {
		fault("dns", o.stopDNS())
	} else {
		fault("dns", errors.Join(err, o.stopDNS()))
	}
	hc, err := hs.conn(host)
	fault("netlink", err)
	if hc != nil && (deleteVeth || o.linkFwdOff) {
		err := hook("close quiesce")
		if err == nil && deleteVeth {
			err = o.quiesce(hc)
		} else if err == nil {
			// Back as AddRules found it.
			err = setUplinkForwarding(o.host, hc, upKey{o.hostIdx, o.ent.families()[0]}, false)
		}
		fault("quiesce", err)
	}
	// No packet passes the link any more: forget its connections (see
	// forgetFlows), or the next holder of the prefix would get their
	// packets.
	err = hook("close conntrack")
	if err == nil {
		err = hs.forgetFlows(host, o.hostIdx)
	}
	fault("conntrack", err)
	if o.dockerUser != "" {
		err := hook("close docker-user")
		if err == nil {
			err = hs.dropDockerUser(host, map[string]int{o.dockerUser: 2 * len(o.dockerFams)})
		}
		fault("docker-user", err)
	}
	if hc != nil {
		err := hook("close nftables")
		if err == nil {
			err = hs.removeLink(host, hc, o.ent)
		}
		fault("nftables", err)
	}
	release(o.hostKey, o.nsKey, o.ent.prefixes)
	socks, err := hs.leave(host)
	fault("nftables table", err)
	if hc != nil {
		hs.putConn(hc)
	}
	// The pair is deleted in the background, and the sockets closed after
	// it (see reaper_linux.go and leave).
	reap := 0
	if deleteVeth {
		err := hook("close veth")
		if err == nil {
			reap = o.hostIdx
		}
		fault("veth", err)
	}
	reapLater(host, o.hostKey, reap, socks)
	o.host.Close()
	o.nsRef.Close()
	if len(errs) > 0 {
		o.err = fmt.Errorf("%s: %w", what, errors.Join(errs...))
	}
	return o.err
}
