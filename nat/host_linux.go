package nat

import (
	"fmt"
	"os"
	"sync"

	"github.com/google/nftables"
	"github.com/nsnet/nsnet/nat/internal/firewall"
	"github.com/nsnet/nsnet/nat/internal/hostview"
	"github.com/nsnet/nsnet/nat/internal/table"
	"github.com/nsnet/nsnet/nat/internal/uplinks"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// hostState is what this process keeps for one host namespace while it
// has links there: its owner socket, idle sockets, what it knows of the
// table and the uplinks it uses, and the route cache. It is forgotten
// (sockets closed) after the last link. mu is never held across I/O.
type hostState struct {
	key uint64 // the host namespace's ID
	mu  sync.Mutex
	// host is the state's own handle to the host namespace, shared by its
	// Links (one descriptor for all of them, not one each): made by the
	// first link, closed by the last one's leave.
	host      *netns.Handle
	links     int             // Links and Rules being made or alive
	ownerMu   sync.Mutex      // guards ownerFD, guardStop and fw, held while they are made
	ownerFD   int             // owner socket (see package owner), -1 if none
	guardStop chan struct{}   // ends the guard (see guard_linux.go)
	live      map[*owned]bool // Links and Rules made and not closed, for the guard
	// restoreMu keeps the guard's restores (see guard_linux.go) apart
	// from changes to the entries of live links: Publish, Unpublish and
	// Close hold it shared while they change them, restore and
	// restoreDockerUser exclusively from their snapshot of the live links
	// to their commit, so that they put back exactly the entries of one
	// moment, never a port unpublished or a link closed meanwhile.
	// Taken after a Link's mu, before hs.mu.
	restoreMu sync.RWMutex
	tbl       table.Host     // the table and idle sockets (its own lock)
	shares    uplinks.Shares // the uplinks' forwarding this process uses (its own lock)
	// fw follows the ruleset (see guard_linux.go and the firewall
	// package); set by the first link, cleared by the last, under ownerMu.
	fw *firewall.Monitor

	view hostview.View // the host's routes and addresses (its own lock)
}

var registry = struct {
	sync.Mutex
	hosts map[uint64]*hostState
}{hosts: map[uint64]*hostState{}}

// enter returns the state of host (its key hostKey) with one more link
// counted; the first also binds the owner socket there.
func enter(host *netns.Handle, hostKey uint64) (*hostState, error) {
	registry.Lock()
	hs := registry.hosts[hostKey]
	if hs == nil {
		hs = &hostState{key: hostKey, ownerFD: -1, live: map[*owned]bool{}}
		registry.hosts[hostKey] = hs
	}
	registry.Unlock()
	hs.mu.Lock()
	hs.links++
	needHost := hs.host == nil
	hs.mu.Unlock()
	hs.tbl.Open()
	if needHost {
		h, err := nl.DupHandle(host)
		if err != nil {
			hs.leaveNow(host)
			return nil, err
		}
		hs.mu.Lock()
		if hs.host == nil {
			hs.host, h = h, nil
		}
		hs.mu.Unlock()
		if h != nil {
			h.Close() // another Connect made it meanwhile
		}
	}
	// Bound before anything with this process's mark exists in host, so
	// no other process can take a mark of a live process for a dead one's.
	hs.ownerMu.Lock()
	defer hs.ownerMu.Unlock()
	watching := hs.fw != nil
	if hs.ownerFD >= 0 && watching {
		return hs, nil
	}
	// The first link (or the first after the last one's leave, while its
	// owner socket waited for its delete): what is missing, in one thread
	// switch (each is a setns and back): the owner socket, the nftables
	// notification socket (see guard_linux.go) and a look at the legacy
	// iptables FORWARD policy (see the firewall package).
	var (
		fd         = -1
		w          *nl.Watch
		legacyDrop bool
		legacyErr  error
	)
	err := nl.Do(host, func() error {
		var err error
		if hs.ownerFD < 0 {
			if fd, err = owner.BindSelf(); err != nil {
				return fmt.Errorf("owner socket: %w", err)
			}
		}
		if watching {
			return nil
		}
		// nil: the calling thread's namespace, which is host's here.
		if w, err = nl.DialWatchFamily(nil, unix.NETLINK_NETFILTER, unix.NFNLGRP_NFTABLES); err != nil {
			return err
		}
		legacyDrop, legacyErr = firewall.LegacyForwardDropHere()
		return nil
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		hs.ownerMu.Unlock()
		hs.leaveNow(host)
		hs.ownerMu.Lock() // for the deferred unlock
		return nil, err
	}
	if fd >= 0 {
		hs.ownerFD = fd
	}
	if !watching {
		if err := hs.startGuard(host, firewall.NewMonitor(host, w, legacyDrop, legacyErr)); err != nil {
			w.Close()
			hs.ownerMu.Unlock()
			hs.leaveNow(host)
			hs.ownerMu.Lock() // for the deferred unlock
			return nil, fmt.Errorf("guard: %w", err)
		}
	}
	return hs, nil
}

// leave uncounts one link; after the last, it removes the table if no
// process uses it any more and forgets everything (sockets, caches, the
// owner socket: from then on this process owns nothing there). The idle
// sockets are handed back for the caller to close after its last kernel
// step: closing an nftables socket makes the kernel finish nf_tables'
// pending destroy work first, which waits for an RCU grace period after
// any commit that deleted something, unless something
// else (a veth delete) has waited for one since.
func (hs *hostState) leave(host *netns.Handle) (idleSockets, error) {
	hs.mu.Lock()
	hs.links--
	last := hs.links == 0
	hs.mu.Unlock()
	if !last {
		return idleSockets{}, nil
	}
	socks := idleSockets{Idle: hs.tbl.Drain()}
	_, err := table.Drop(host, &socks.Idle, hs.busy)
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.links != 0 {
		hs.tbl.Open()
		return socks, err // a Connect came in meanwhile: it keeps all the rest
	}
	hs.shares.Reset()
	hs.view.Close()
	hs.ownerMu.Lock()
	if hs.guardStop != nil {
		close(hs.guardStop)
		hs.guardStop = nil
	}
	socks.fw, hs.fw = hs.fw, nil // a netfilter socket too: closed with the others
	hs.ownerMu.Unlock()
	if hs.host != nil {
		// No link uses it any more. (The closing link's own host is this
		// one or its own; the caller does not use it after leave.)
		hs.host.Close()
		hs.host = nil
	}
	socks.owner = hs // the owner socket goes last, with the sockets
	return socks, err
}

// releaseOwner closes the owner socket if no link is counted (again): it
// is the last thing to go, after everything marked with the process's
// owner ID, so that no other process's Sweep takes a closing link for a
// dead owner's.
//
// Locks are taken in the order hs.mu, ownerMu (as leave does): the idle
// sockets of one Close are closed while other links of the host close.
func (hs *hostState) releaseOwner() {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.ownerMu.Lock()
	defer hs.ownerMu.Unlock()
	if hs.links == 0 && hs.ownerFD >= 0 {
		unix.Close(hs.ownerFD)
		hs.ownerFD = -1
	}
}

// handle returns the host state's shared handle to the host (see
// hostState.host); valid while the caller's link is counted.
func (hs *hostState) handle() *netns.Handle {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.host
}

// busy reports whether the process has links in the host (again).
func (hs *hostState) busy() bool {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.links != 0
}

// leaveNow is leave for a Connect or AddRules that failed: no veth delete
// to wait for, so the sockets close at once.
func (hs *hostState) leaveNow(host *netns.Handle) {
	socks, _ := hs.leave(host)
	socks.close()
}

// idleSockets are the sockets of a leaving link's host state that are
// closed after its veth's delete is acknowledged (see leave).
type idleSockets struct {
	table.Idle
	fw    *firewall.Monitor // its nftables notifications socket (see guard_linux.go)
	owner *hostState        // after the last link: release its owner socket too
}

func (s idleSockets) close() {
	s.Idle.Close()
	if s.fw != nil {
		s.fw.Close()
	}
	if s.owner != nil {
		s.owner.releaseOwner()
	}
}

// openHost is resolveHost for a call's host namespace argument: a closed
// handle is netns.ErrClosed, and errors say it was the host namespace.
func openHost(hostNS *netns.Handle) (*netns.Handle, error) {
	if hostNS != nil && hostNS.Fd() < 0 {
		return nil, fmt.Errorf("host namespace: %w", netns.ErrClosed)
	}
	host, err := resolveHost(hostNS)
	if err != nil {
		return nil, fmt.Errorf("host namespace: %w", err)
	}
	return host, nil
}

// resolveHost returns a handle of the library's own to h's namespace, for
// nil the calling thread's: resolved once, here on the caller's thread,
// so that no internal goroutine (running elsewhere) can mistake its own
// namespace for the caller's, and so that Close works after the caller
// closed h.
func resolveHost(h *netns.Handle) (*netns.Handle, error) {
	if h == nil {
		return netns.Current()
	}
	return nl.DupHandle(h)
}

// firewall returns what the other firewalls look like (see the firewall
// package): looked at by the first Connect of a host state, and again
// whenever nftables notifications say that a table, chain or rule changed.
func (hs *hostState) firewall(host *netns.Handle) (firewall.View, error) {
	hs.pollNFT(host)
	fw := hs.monitor()
	if fw == nil {
		return firewall.View{}, fmt.Errorf("firewall check: %w", os.ErrClosed) // (a link is counted: not reached)
	}
	return fw.View(func() (firewall.View, error) {
		var v firewall.View
		err := hs.tbl.WithNFT(host, func(c *nftables.Conn) (err error) {
			v, err = firewall.Look(c)
			return err
		})
		return v, err
	})
}

// monitor returns the ruleset monitor, nil when the process has no link
// in the host.
func (hs *hostState) monitor() *firewall.Monitor {
	hs.ownerMu.Lock()
	defer hs.ownerMu.Unlock()
	return hs.fw
}
