package nat

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/nsnet/nsnet/internal/nl"
)

// sysCloseAll is CloseAll on Linux.
func sysCloseAll(links ...*Link) error {
	byHost := map[*hostState][]*Link{}
	var order []*hostState
	seen := map[*Link]bool{}
	var errs []error
	for _, l := range links {
		if l == nil || seen[l] {
			continue
		}
		seen[l] = true
		if l.hs == nil {
			errs = append(errs, l.Close()) // not made by Connect: Close says so
			continue
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			continue
		}
		l.closed = true
		l.hs.removeLive(&l.owned)
		if byHost[l.hs] == nil {
			order = append(order, l.hs)
		}
		byHost[l.hs] = append(byHost[l.hs], l)
	}
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
	for _, l := range links {
		if err := l.stopDNS(); err != nil {
			errs = append(errs, fmt.Errorf("dns: %w", err))
		}
	}
	hc, err := hs.conn(host)
	if err != nil {
		errs = append(errs, err)
	}
	if hc != nil {
		// The same order as Close: traffic stopped, entries removed, veths
		// deleted (in one group, one RCU grace period for all).
		step("quiesce", func() error {
			var reqs []nl.Request
			for _, l := range links {
				reqs = append(reqs, nl.SetForwarding(l.hostIdx, false))
				for _, n := range l.nets {
					reqs = append(reqs, n.delHost(l.hostIdx)...)
				}
			}
			_, qerrs, err := hc.Do(reqs...)
			for _, e := range qerrs {
				if e != nil && !errors.Is(e, os.ErrNotExist) {
					err = errors.Join(err, e)
				}
			}
			return err
		})
		step("conntrack", func() error {
			var idx []int
			for _, l := range links {
				idx = append(idx, l.hostIdx)
			}
			return hs.forgetFlows(host, idx...)
		})
		comments := map[string]int{}
		for _, l := range links {
			if l.dockerUser != "" {
				comments[l.dockerUser] = 2 * len(l.dockerFams)
			}
		}
		if len(comments) > 0 {
			step("docker-user", func() error { return hs.dropDockerUser(host, comments) })
		}
		step("nftables", func() error {
			// The entries of all links but the last of each uplink
			// forwarding (uplink and family), in one transaction; the last
			// ones each with their uplink's release.
			var errs []error
			var bulk []elem
			left := map[upKey]int{}
			for _, l := range links {
				for _, k := range l.ent.upKeys() {
					left[k]++
				}
			}
			var last []*Link
			for _, l := range links {
				isLast := false
				for _, k := range l.ent.upKeys() {
					left[k]--
					isLast = isLast || left[k] == 0
				}
				if isLast {
					last = append(last, l)
				} else {
					bulk = append(bulk, l.ent.elems()...)
					hs.dropUser(l.ent)
				}
			}
			if len(bulk) > 0 {
				errs = append(errs, hs.delEntries(host, bulk))
			}
			for _, l := range last {
				errs = append(errs, hs.removeLink(host, hc, l.ent))
			}
			return errors.Join(errs...)
		})
	}
	var socks []idleSockets
	for _, l := range links {
		release(l.hostKey, l.nsKey, l.ent.prefixes)
		s, err := hs.leave(l.host)
		if err != nil {
			errs = append(errs, fmt.Errorf("nftables table: %w", err))
		}
		socks = append(socks, s)
	}
	if hc != nil {
		step("veths", func() error {
			idx := make([]int, 0, len(links))
			for _, l := range links {
				idx = append(idx, l.hostIdx)
			}
			moved, err := deleteInGroup(hc, idx)
			return errors.Join(errors.Join(moved...), err)
		})
		hs.putConn(hc)
	}
	for i, l := range links {
		socks[i].close() // after the veth delete: see leave
		l.host.Close()
		l.nsRef.Close()
	}
	if len(errs) > 0 {
		return fmt.Errorf("nat: close %d links: %w", len(links), errors.Join(errs...))
	}
	return nil
}

// dropUser uncounts one of this process's links e, whose entries are
// removed by someone else (CloseAll) and which is not the last of its
// uplink's users.
func (hs *hostState) dropUser(e entries) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	for _, k := range e.upKeys() {
		if ref := hs.uplinks[k]; ref != nil && ref.users > 1 {
			ref.users--
		}
	}
}

// deleteInGroup deletes the links (interface indexes) with one request:
// it moves them into a fresh device group, then deletes the group, so the
// kernel waits for one RCU grace period for all of them instead of one
// each. moved holds the error of each move (a link gone already: one
// matching os.ErrNotExist); the group is deleted even if some could not
// join it.
func deleteInGroup(hc *nl.Conn, links []int) (moved []error, err error) {
	if len(links) == 0 {
		return nil, nil
	}
	g := randomGroup()
	reqs := make([]nl.Request, 0, len(links))
	for _, l := range links {
		reqs = append(reqs, nl.SetGroup(l, g))
	}
	if _, moved, err = hc.Do(reqs...); err != nil {
		return moved, err
	}
	return moved, hc.Exec(nl.DeleteGroup(g))
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
