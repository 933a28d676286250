package nat

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/nsnet/nsnet/internal/nl"
)

// CloseAll closes many links at once, much faster than calling Close on
// each: one nftables transaction removes all their set entries, and their
// veth pairs are moved into a fresh device group and deleted with one
// request, so the kernel waits for one RCU grace period for all of them
// instead of one per link (tens of milliseconds each). When it returns,
// every link, address, route, rule and forwarding setting of the links is
// gone, as after Close. Links already closed are skipped; nil entries are
// ignored. Errors are joined; each link ends closed either way.
func CloseAll(links ...*Link) error {
	byHost := map[*hostState][]*Link{}
	var order []*hostState
	seen := map[*Link]bool{}
	for _, l := range links {
		if l == nil || seen[l] {
			continue
		}
		seen[l] = true
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			continue
		}
		l.closed = true
		if byHost[l.hs] == nil {
			order = append(order, l.hs)
		}
		byHost[l.hs] = append(byHost[l.hs], l)
	}
	var errs []error
	for _, hs := range order {
		group := byHost[hs]
		err := closeGroup(hs, group)
		for _, l := range group {
			l.err = err
			l.mu.Unlock()
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func closeGroup(hs *hostState, links []*Link) error {
	host := links[0].host
	var errs []error
	step := func(name string, f func() error) {
		err := hook("close all " + name)
		if err == nil {
			err = f()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	step("nftables", func() error {
		// One message per set for many links, not one per link; a
		// transaction per 200 links keeps each send under the socket's
		// limit (EMSGSIZE past about 200 KiB).
		var errs []error
		for lo := 0; lo < len(links); lo += 200 {
			var all elements
			for _, l := range links[lo:min(lo+200, len(links))] {
				all.add(l.elems)
			}
			errs = append(errs, hs.flush(host, func(c *nftables.Conn) error { return all.apply(c, false) }))
		}
		return errors.Join(errs...)
	})
	// The uplinks and the table go before the veths, and the nftables
	// sockets are closed after them (see nftSockets).
	hc, err := hs.conn(host)
	if err != nil {
		errs = append(errs, err)
	} else {
		step("uplink forwarding", func() error {
			var errs []error
			for _, l := range links {
				errs = append(errs, hs.releaseUplink(hc, host, l.uplinkIdx, l.Uplink, elements{}))
			}
			return errors.Join(errs...)
		})
	}
	var socks []nftSockets
	for _, l := range links {
		release(l.hostKey, l.nsKey, l.Prefix)
		s, err := hs.leave(l.host)
		if err != nil {
			errs = append(errs, fmt.Errorf("nftables table: %w", err))
		}
		socks = append(socks, s)
	}
	if hc != nil {
		step("veths", func() error {
			g := randomGroup()
			reqs := make([]nl.Request, 0, len(links)+1)
			for _, l := range links {
				reqs = append(reqs, nl.SetGroup(l.HostVeth, g))
			}
			_, gerrs, err := hc.Do(reqs...)
			if err != nil {
				return err
			}
			// Delete the group even if some could not join it; report those.
			return errors.Join(errors.Join(gerrs...), hc.Exec(nl.DeleteGroup(g)))
		})
		hs.putConn(hc)
	}
	for i, l := range links {
		socks[i].close()
		l.host.Close()
		l.nsRef.Close()
	}
	if len(errs) > 0 {
		return fmt.Errorf("nat: close %d links: %w", len(links), errors.Join(errs...))
	}
	return nil
}

// randomGroup picks a device group no one uses: not 0 (the default group
// every link starts in) and random across 2^32, so that the group delete
// takes only the links just moved into it.
func randomGroup() uint32 {
	var b [4]byte
	for {
		rand.Read(b[:])
		if g := binary.NativeEndian.Uint32(b[:]); g > 1 {
			return g
		}
	}
}
