package addr

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// sysAdd is Add on Linux.
func sysAdd(ns *netns.Handle, link string, p netip.Prefix) error { return Config{}.Add(ns, link, p) }

// sysReplace is Replace on Linux.
func sysReplace(ns *netns.Handle, link string, p netip.Prefix) error {
	return Config{}.Replace(ns, link, p)
}

// sysAdd is Add on Linux.
func (c Config) sysAdd(ns *netns.Handle, link string, p netip.Prefix) error {
	return c.change(ns, "add", link, p, false)
}

// sysReplace is Replace on Linux.
func (c Config) sysReplace(ns *netns.Handle, link string, p netip.Prefix) error {
	return c.change(ns, "replace", link, p, true)
}

func (c Config) change(ns *netns.Handle, op, link string, p netip.Prefix, replace bool) error {
	var flags uint32
	if c.NoDAD && p.Addr().Is6() {
		flags |= unix.IFA_F_NODAD
	}
	return do(ns, op, link, p, func(index int) nl.Request { return nl.NewAddr(index, p, flags, replace) })
}

// sysDelete is Delete on Linux.
func sysDelete(ns *netns.Handle, link string, p netip.Prefix) error {
	return do(ns, "delete", link, p, func(index int) nl.Request { return nl.DelAddr(index, p) })
}

func do(ns *netns.Handle, op, link string, p netip.Prefix, req func(index int) nl.Request) error {
	if err := nl.CheckIfName(link); err != nil {
		return fmt.Errorf("addr: %s %v: %w", op, p, err)
	}
	if err := Validate(p); err != nil {
		return fmt.Errorf("addr: %s: %w", op, err)
	}
	c, err := nl.Dial(ns)
	if err != nil {
		return fmt.Errorf("addr: %s %v dev %s: %w", op, p, link, err)
	}
	defer c.Close()
	index, err := c.LinkIndex(link)
	if err == nil {
		err = c.Exec(req(index))
	}
	if err != nil {
		return fmt.Errorf("addr: %s %v dev %s: %w", op, p, link, err)
	}
	return nil
}

// sysList is List on Linux.
func sysList(ns *netns.Handle, link string) ([]Address, error) {
	if link != "" {
		if err := nl.CheckIfName(link); err != nil {
			return nil, fmt.Errorf("addr: list: %w", err)
		}
	}
	c, err := nl.Dial(ns)
	if err != nil {
		return nil, fmt.Errorf("addr: list: %w", err)
	}
	defer c.Close()
	index := 0
	if link != "" {
		if index, err = c.LinkIndex(link); err != nil {
			return nil, fmt.Errorf("addr: list dev %s: %w", link, err)
		}
	}
	return list(ns, c, index)
}

// list reads the addresses while watching for changes to any address,
// and reads them again while any came in during the read (see
// nl.DumpUnchanged). A dump is read in parts, and addresses removed
// between two parts shift the kernel's position in its list: others, which
// stayed, were silently left out (50-80 % of lists of a link with 1,200
// addresses while 400 others went). Unfiltered dumps say so with
// NLM_F_DUMP_INTR; a dump of one link's addresses says nothing.
//
// A new IPv6 address is notified later, from a work queue, so the watch
// can miss one added during the read; but one added before the kernel's
// position makes it send an address it had sent already, which the read
// shows: a read with an address twice is read again.
func list(ns *netns.Handle, c *nl.Conn, index int) ([]Address, error) {
	var out []Address
	var derr error
	_, err := nl.DumpUnchanged(ns, c, nl.DumpAddrs(0, index), func(msgs []netlink.Message) bool {
		if out, derr = decode(msgs, index); derr != nil {
			return true // (reported below)
		}
		type key struct {
			p    netip.Prefix
			link int
		}
		seen := make(map[key]bool, len(out))
		for _, a := range out {
			k := key{a.Prefix, a.LinkIndex}
			if seen[k] {
				return false
			}
			seen[k] = true
		}
		return true
	}, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR)
	switch {
	case errors.Is(err, nl.ErrInterrupted):
		return nil, fmt.Errorf("addr: list: %w", ErrInterrupted)
	case err != nil:
		return nil, fmt.Errorf("addr: list: %w", err)
	case derr != nil:
		return nil, derr
	}
	return out, nil
}

// decode reads the addresses of link index (all for 0) in a dump.
func decode(msgs []netlink.Message, index int) ([]Address, error) {
	var out []Address
	for _, m := range msgs {
		var am rtnetlink.AddressMessage
		if err := am.UnmarshalBinary(m.Data); err != nil {
			return nil, fmt.Errorf("addr: list: %w", err)
		}
		if index != 0 && int(am.Index) != index || am.Attributes == nil {
			continue // a kernel without strict filtering sent them all
		}
		ip := am.Attributes.Local
		if ip == nil {
			ip = am.Attributes.Address
		}
		a := Address{
			Prefix:    netip.PrefixFrom(nl.IPToAddr(ip), int(am.PrefixLength)),
			LinkIndex: int(am.Index),
			Scope:     am.Scope,
			Flags:     am.Attributes.Flags | uint32(am.Flags),
			Label:     am.Attributes.Label,
		}
		if am.Attributes.Broadcast != nil {
			a.Broadcast = nl.IPToAddr(am.Attributes.Broadcast)
		}
		out = append(out, a)
	}
	return out, nil
}

// sysWaitReady is WaitReady on Linux.
func sysWaitReady(ctx context.Context, ns *netns.Handle, link string, p netip.Prefix) error {
	if err := nl.CheckIfName(link); err != nil {
		return fmt.Errorf("addr: wait %v: %w", p, err)
	}
	if err := Validate(p); err != nil {
		return fmt.Errorf("addr: wait: %w", err)
	}
	c, err := nl.Dial(ns)
	if err != nil {
		return fmt.Errorf("addr: wait %v: %w", p, err)
	}
	defer c.Close()
	index, err := c.LinkIndex(link)
	if err != nil {
		return fmt.Errorf("addr: wait %v dev %s: %w", p, link, err)
	}
	// Address notifications wake the loop: DAD's end changes the
	// address's flags, which the kernel announces.
	w, err := nl.DialWatch(ns, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR)
	if err != nil {
		return fmt.Errorf("addr: wait %v: %w", p, err)
	}
	defer w.Close()
	defer context.AfterFunc(ctx, w.Interrupt)()
	for {
		// Drain first, look second: a change after the look is then
		// still queued for Wait.
		// A done ctx has interrupted the socket (its deadline passed): the
		// address is still looked at once, and Wait below says ctx is done.
		err := w.Poll(func(uint16, uint16, []byte) {})
		if err != nil && !errors.Is(err, nl.ErrOverflow) && !errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("addr: wait %v: %w", p, err)
		}
		addrs, err := list(ns, c, index)
		interrupted := errors.Is(err, ErrInterrupted)
		if interrupted {
			err = nil // changed while read: the changes are queued too
		}
		if err != nil {
			return err
		}
		found := false
		for _, a := range addrs {
			if a.Prefix != p {
				continue
			}
			found = true
			if a.Flags&unix.IFA_F_DADFAILED != 0 {
				return fmt.Errorf("addr: wait %v dev %s: %w", p, link, ErrDADFailed)
			}
			if !a.Tentative() {
				return nil
			}
		}
		if !found && !interrupted {
			return fmt.Errorf("addr: wait %v dev %s: %w", p, link, nl.Wrap(unix.EADDRNOTAVAIL))
		}
		if err := w.Wait(); ctx.Err() != nil {
			return fmt.Errorf("addr: wait %v dev %s: %w", p, link, ctx.Err())
		} else if err != nil {
			return fmt.Errorf("addr: wait %v dev %s: %w", p, link, err)
		}
	}
}
