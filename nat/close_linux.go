package nat

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/nsnet/nsnet/internal/nl"
)

// sysClose is Close on Linux.
func (l *Link) sysClose() error {
	if l == nil {
		return fmt.Errorf("nat: close of a nil *Link: %w", os.ErrInvalid)
	}
	return l.owned.close("nat: close "+l.owned.what(), true)
}

// quiesce stops all traffic through a link in one round trip: forwarding
// off on its host end (nothing from the namespace is forwarded) and the
// host end's address removed, which takes the route to the namespace with
// it (nothing is forwarded to it). A link already gone is no error here:
// the veth delete reports it.
func quiesce(hc *nl.Conn, index int, addr netip.Prefix) error {
	_, errs, err := hc.Do(nl.SetForwarding(index, false), nl.DelAddr(index, addr))
	if err != nil {
		return err
	}
	for _, e := range errs {
		if e != nil && !errors.Is(e, os.ErrNotExist) {
			return e
		}
	}
	return nil
}

// what names the link in Close's errors, from the record.
func (o *owned) what() string {
	if o.hs == nil {
		return "link"
	}
	return fmt.Sprintf("%v (%s)", o.ent.prefix, o.vethName)
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
			err = quiesce(hc, o.hostIdx, o.hostAddr)
		} else if err == nil {
			err = hc.Exec(nl.SetForwarding(o.hostIdx, false)) // back as AddRules found it
		}
		fault("quiesce", err)
	}
	// No packet passes the link any more: forget its connections (see
	// forgetFlows), or the next holder of the prefix would get their
	// packets.
	err = hook("close conntrack")
	if err == nil {
		err = forgetFlows(host, o.hostIdx)
	}
	fault("conntrack", err)
	if o.dockerUser != "" {
		err := hook("close docker-user")
		if err == nil {
			err = hs.dropDockerUser(host, map[string]bool{o.dockerUser: true})
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
	release(o.hostKey, o.nsKey, o.ent.prefix)
	socks, err := hs.leave(host)
	fault("nftables table", err)
	if hc != nil {
		if deleteVeth {
			err := hook("close veth")
			if err == nil {
				err = hc.Exec(nl.DeleteLink(o.hostIdx, ""))
				if errors.Is(err, os.ErrNotExist) {
					err = fmt.Errorf("veth %s (index %d) %w", o.vethName, o.hostIdx, errGone)
				}
			}
			fault("veth", err)
		}
		hs.putConn(hc)
	}
	socks.close() // after the veth delete: see leave
	o.host.Close()
	o.nsRef.Close()
	if len(errs) > 0 {
		o.err = fmt.Errorf("%s: %w", what, errors.Join(errs...))
	}
	return o.err
}
