package nl

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"os"
	"time"

	"github.com/nsnet/nsnet/netns"
)

// DeleteLinks deletes the links of host (interface indexes) with one
// request and returns as soon as the kernel has unlisted all of them,
// which takes under a millisecond: the kernel unregisters a device (and a
// veth's peer with it, in the same section under the RTNL lock) at once,
// but acknowledges the request only after an rcu_barrier() that runs once
// the lock is released (10-40 ms). So the request is sent and its
// acknowledgement awaited on a goroutine of its own, with a socket of its
// own, while the caller polls for the links on poll (a socket of host).
// When DeleteLinks returns, every link is gone from every listing, and the
// process may exit at once: an exit waits for a request the kernel is
// still running, it does not undo it.
//
// Several links are moved into a fresh device group first and deleted as
// the group: one barrier for all. gone holds, per link, an error matching
// os.ErrNotExist for a link that was gone already; err is the first other
// failure. after, if not nil, runs once the request is acknowledged (or
// failed), on that goroutine: for work that would otherwise wait for the
// same grace period (closing an nftables socket after a commit that
// deleted something does).
func DeleteLinks(host *netns.Handle, poll *Conn, links []int, after func()) (gone []error, err error) {
	runAfter := func() {
		if after != nil {
			after()
		}
	}
	if len(links) == 0 {
		runAfter()
		return nil, nil
	}
	// A look at the one link, or the moves of several into the group: a
	// link gone already is told apart from one the request deletes.
	reqs := make([]Request, 0, len(links))
	req := DeleteLink(links[0], "")
	if len(links) == 1 {
		reqs = append(reqs, GetLinkByIndex(links[0]))
	} else {
		g := RandomGroup()
		for _, l := range links {
			reqs = append(reqs, SetGroup(l, g))
		}
		req = DeleteGroup(g)
	}
	_, errs, err := poll.Do(reqs...)
	if err != nil {
		runAfter()
		return nil, err
	}
	gone = make([]error, len(links))
	var failed []error
	left := 0
	for i, e := range errs {
		switch {
		case errors.Is(e, os.ErrNotExist):
			gone[i] = e
		case e != nil:
			failed = append(failed, e)
			gone[i] = e // not ours to wait for
		default:
			left++
		}
	}
	if left == 0 {
		runAfter()
		return gone, errors.Join(failed...)
	}
	dc, err := Dial(host)
	if err != nil {
		runAfter()
		return gone, err
	}
	done := make(chan error, 1)
	go func() {
		err := dc.Exec(req)
		dc.Close()
		runAfter()
		done <- err
	}()
	err = waitUnlisted(poll, links, gone, done)
	if errors.Is(err, os.ErrNotExist) {
		err = nil // gone meanwhile, by someone else
	}
	return gone, errors.Join(append(failed, err)...)
}

// waitUnlisted polls until none of links is listed, or the delete request
// (done) failed. A link whose entry in gone is set already is not looked
// for; one found gone by the request itself (it went meanwhile) is no
// failure.
func waitUnlisted(poll *Conn, links []int, gone []error, done <-chan error) error {
	pending := make([]int, 0, len(links))
	for i, l := range links {
		if gone[i] == nil {
			pending = append(pending, l)
		}
	}
	finished, reqErr := false, error(nil)
	for delay := 20 * time.Microsecond; ; delay = min(2*delay, time.Millisecond) {
		if !finished {
			select {
			case reqErr = <-done:
				finished = true
			default:
			}
		}
		reqs := make([]Request, 0, len(pending))
		for _, l := range pending {
			reqs = append(reqs, GetLinkByIndex(l))
		}
		_, errs, err := poll.Do(reqs...)
		if err != nil {
			return err
		}
		left := pending[:0]
		for i, e := range errs {
			switch {
			case errors.Is(e, os.ErrNotExist):
			case e != nil:
				return e
			default:
				left = append(left, pending[i])
			}
		}
		pending = left
		switch {
		case len(pending) == 0:
			return reqErr
		case finished && reqErr != nil:
			return reqErr
		case finished:
			// Acknowledged, and still listed: another link took the index
			// between the delete and the look (indexes are reused). Ours
			// is gone.
			return nil
		}
		time.Sleep(delay)
	}
}

// RandomGroup picks a device group no one uses: not 0 (the default group
// every link starts in) nor 1, and random across 2^32, so that a group
// delete takes only the links just moved into it.
func RandomGroup() uint32 {
	var b [4]byte
	for {
		rand.Read(b[:])
		if g := binary.NativeEndian.Uint32(b[:]); g > 1 {
			return g
		}
	}
}

// StopLinks takes the links down with their IPv4 forwarding off, where
// they could not be deleted: nothing passes them then.
func StopLinks(hc *Conn, links []int) error {
	var reqs []Request
	for _, l := range links {
		reqs = append(reqs, SetLinkUp(l, "", false), SetForwarding(l, false))
	}
	_, errs, err := hc.Do(reqs...)
	for _, e := range errs {
		if e != nil && !errors.Is(e, os.ErrNotExist) {
			err = errors.Join(err, e)
		}
	}
	return err
}
