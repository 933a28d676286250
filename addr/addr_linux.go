package addr

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"

	"github.com/jsimonetti/rtnetlink/v2"
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
	return list(c, index)
}

// list reads the addresses twice and returns them when both reads agree.
// A dump is read in parts, and addresses removed between two parts shift
// the kernel's position in its list: others, which stayed, were silently
// left out (50-80 % of lists of a link with 1,200 addresses while 400
// others went). Unfiltered dumps say so with NLM_F_DUMP_INTR; a dump of
// one link's addresses says nothing, so two agreeing reads are the check.
func list(c *nl.Conn, index int) ([]Address, error) {
	prev, err := listOnce(c, index)
	for attempt := 0; err == nil && attempt < 8; attempt++ {
		var cur []Address
		if cur, err = listOnce(c, index); err == nil && slices.EqualFunc(prev, cur, sameAddress) {
			return cur, nil
		}
		prev = cur
	}
	if err == nil || errors.Is(err, nl.ErrInterrupted) {
		return nil, fmt.Errorf("addr: list: %w", ErrInterrupted)
	}
	return nil, err
}

// sameAddress compares what List reports, except lifetimes, which the
// kernel counts down between two reads.
func sameAddress(a, b Address) bool {
	return a.Prefix == b.Prefix && a.LinkIndex == b.LinkIndex && a.Scope == b.Scope &&
		a.Flags == b.Flags && a.Label == b.Label && a.Broadcast == b.Broadcast
}

func listOnce(c *nl.Conn, index int) ([]Address, error) {
	msgs, err := c.Dump(nl.DumpAddrs(0, index))
	if err != nil {
		return nil, fmt.Errorf("addr: list: %w", err)
	}
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
		addrs, err := list(c, index)
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
