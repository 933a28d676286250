package nat

import (
	"errors"
	"fmt"
	"github.com/nsnet/nsnet/nat/internal/firewall"
	"github.com/nsnet/nsnet/nat/internal/hostview"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/netns"
	"github.com/ti-mo/conntrack"
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
	restoreMu   sync.RWMutex
	tableReady  bool
	tableMaking *tableAttempt
	uplinks     map[upKey]*uplinkRef
	// regs counts, per uplink forwarding, this process's registrations
	// (uplinkRefs that registered) not yet unregistered, with the original
	// setting the first recorded. It changes only under the host lock: a
	// Close whose unregister waits for the lock while a new Connect
	// registers the same uplink again must leave the process's entry and
	// the forwarding to the new registration.
	regs  map[upKey]*registration
	conns []*nl.Conn
	nfts  []*nftables.Conn
	raws  []*netlink.Conn
	cts   []*conntrack.Conn
	// fw follows the ruleset (see guard_linux.go and the firewall
	// package); set by the first link, cleared by the last, under ownerMu.
	fw *firewall.Monitor

	view hostview.View // the host's routes and addresses (its own lock)
}

// registration is this process's share of an uplink's forwarding in the
// uplinks set (see hostState.regs).
type registration struct {
	count   int
	origOff bool
}

// uplinkRef is this process's use of one uplink's forwarding (by index
// and family).
type uplinkRef struct {
	users      int  // this process's links out of it
	registered bool // this process has its entry in the uplinks set
	origOff    bool // forwarding was off before the first nsnet user
}

var registry = struct {
	sync.Mutex
	hosts    map[uint64]*hostState
	prefixes map[uint64][]netip.Prefix // host ns → this process's live prefixes
	nss      map[uint64]bool           // connected namespaces
}{hosts: map[uint64]*hostState{}, prefixes: map[uint64][]netip.Prefix{}, nss: map[uint64]bool{}}

// enter returns the state of host (its key hostKey) with one more link
// counted; the first also binds the owner socket there.
func enter(host *netns.Handle, hostKey uint64) (*hostState, error) {
	registry.Lock()
	hs := registry.hosts[hostKey]
	if hs == nil {
		hs = &hostState{key: hostKey, uplinks: map[upKey]*uplinkRef{}, regs: map[upKey]*registration{}, ownerFD: -1, live: map[*owned]bool{}}
		registry.hosts[hostKey] = hs
	}
	registry.Unlock()
	hs.mu.Lock()
	hs.links++
	needHost := hs.host == nil
	hs.mu.Unlock()
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
	err := host.Do(func() error {
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
		if err := hs.startGuard(host, firewall.NewMonitor(w, legacyDrop, legacyErr)); err != nil {
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
	hs.mu.Lock()
	socks := idleSockets{rt: hs.conns, nft: hs.nfts, raw: hs.raws, ct: hs.cts}
	hs.conns, hs.nfts, hs.raws, hs.cts = nil, nil, nil, nil
	hs.mu.Unlock()
	_, err := dropTable(host, &socks, hs.busy)
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.links != 0 {
		return socks, err // a Connect came in meanwhile: it keeps all the rest
	}
	clear(hs.uplinks)
	clear(hs.regs)
	hs.tableReady = false
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

type idleSockets struct {
	rt    []*nl.Conn
	nft   []*nftables.Conn
	raw   []*netlink.Conn
	ct    []*conntrack.Conn
	fw    *firewall.Monitor // its nftables notifications socket (see guard_linux.go)
	owner *hostState        // after the last link: release its owner socket too
}

// nftConn and rawConn return one of s's sockets, dialling one (kept in s,
// to be closed with the rest) if there is none.
func (s *idleSockets) nftConn(host *netns.Handle) (*nftables.Conn, error) {
	return firstOrDial(&s.nft, func() (*nftables.Conn, error) { return nftConn(host) })
}

func (s *idleSockets) rawConn(host *netns.Handle) (*netlink.Conn, error) {
	return firstOrDial(&s.raw, func() (*netlink.Conn, error) { return nftset.DialNFT(host) })
}

func firstOrDial[C any](pool *[]C, dial func() (C, error)) (C, error) {
	if len(*pool) == 0 {
		c, err := dial()
		if err != nil {
			return c, err
		}
		*pool = append(*pool, c)
	}
	return (*pool)[0], nil
}

func (s idleSockets) close() {
	for _, c := range s.rt {
		c.Close()
	}
	for _, c := range s.nft {
		c.CloseLasting()
	}
	for _, c := range s.raw {
		c.Close()
	}
	for _, c := range s.ct {
		c.Close()
	}
	if s.fw != nil {
		s.fw.Close()
	}
	if s.owner != nil {
		s.owner.releaseOwner()
	}
}

// take takes the last idle connection of pool, a pool of hs.
func take[C any](hs *hostState, pool *[]C) (c C, ok bool) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if n := len(*pool); n > 0 {
		c, *pool = (*pool)[n-1], (*pool)[:n-1]
		return c, true
	}
	return c, false
}

// put keeps c for later while links exist, unless the operation on it
// failed (a failed connection may hold stale replies) or enough are kept.
func put[C any](hs *hostState, pool *[]C, c C, failed bool, closeFn func(C)) {
	hs.mu.Lock()
	if !failed && hs.links > 0 && len(*pool) < 4 {
		*pool = append(*pool, c)
		hs.mu.Unlock()
		return
	}
	hs.mu.Unlock()
	closeFn(c)
}

// conn returns an idle rtnetlink socket of the host, or dials one.
func (hs *hostState) conn(host *netns.Handle) (*nl.Conn, error) {
	if c, ok := take(hs, &hs.conns); ok {
		return c, nil
	}
	return nl.Dial(host)
}

func (hs *hostState) putConn(c *nl.Conn) {
	put(hs, &hs.conns, c, false, func(c *nl.Conn) { c.Close() })
}

// nft returns an idle google/nftables connection (for the skeleton and
// for reading sets), or dials one.
func (hs *hostState) nft(host *netns.Handle) (*nftables.Conn, error) {
	if c, ok := take(hs, &hs.nfts); ok {
		return c, nil
	}
	return nftConn(host)
}

// putNFT: a google/nftables Conn that failed to serialise a message stays
// failed, so one that saw an error is closed.
func (hs *hostState) putNFT(c *nftables.Conn, err error) {
	put(hs, &hs.nfts, c, err != nil, func(c *nftables.Conn) { c.CloseLasting() })
}

// commit commits b on an idle raw nftables socket of the host.
func (hs *hostState) commit(host *netns.Handle, b *nftset.Batch) error {
	c, ok := take(hs, &hs.raws)
	if !ok {
		var err error
		if c, err = nftset.DialNFT(host); err != nil {
			return err
		}
	}
	err := b.Commit(c)
	put(hs, &hs.raws, c, err != nil, func(c *netlink.Conn) { c.Close() })
	return err
}

// withNFT runs fn with an idle google/nftables connection of the host
// state.
func (hs *hostState) withNFT(host *netns.Handle, fn func(*nftables.Conn) error) error {
	c, err := hs.nft(host)
	if err != nil {
		return err
	}
	err = fn(c)
	hs.putNFT(c, err)
	return err
}

// nftConn opens a lasting google/nftables connection in the host
// namespace, with a read buffer large enough for big set listings.
func nftConn(host *netns.Handle) (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
		return c.SetReadBuffer(4 << 20)
	})}
	fd, err := nl.NSFd(host)
	if err != nil {
		return nil, err
	}
	c, err := nftables.New(append(opts, nftables.WithNetNSFd(fd))...)
	runtime.KeepAlive(host)
	return c, err
}

// tableAttempt is one attempt at making the table, shared by the Connects
// of this process that wait for it: a second creation would fail, and the
// kernel makes every failed transaction wait for an RCU grace period.
type tableAttempt struct {
	done chan struct{}
	err  error // set before done is closed
}

// ensureTable makes the library's table, or checks that the one there is
// the library's, once per host state (again after it went missing).
func (hs *hostState) ensureTable(host *netns.Handle) error {
	hs.mu.Lock()
	if hs.tableReady {
		hs.mu.Unlock()
		return nil
	}
	making := hs.tableMaking
	if making != nil {
		hs.mu.Unlock()
		<-making.done
		return making.err
	}
	making = &tableAttempt{done: make(chan struct{})}
	hs.tableMaking = making
	hs.mu.Unlock()

	err := hook("nftables table")
	if err == nil {
		err = hs.makeTable(host)
	}
	hs.mu.Lock()
	hs.tableReady = err == nil
	hs.tableMaking = nil
	hs.mu.Unlock()
	making.err = err
	close(making.done)
	return err
}

func (hs *hostState) makeTable(host *netns.Handle) error {
	// Another process's table, most of the time when there is one: look
	// first. A transaction that fails (EEXIST) makes the kernel wait for
	// an RCU grace period, about 10 ms of every new process's first
	// Connect (of every CNI ADD, which is one), where the look costs one
	// dump of the table's sets.
	err := hs.ownTable(host)
	if err == nil || !nftset.IsENOENT(err) {
		return err
	}
	for attempt := 0; attempt < 4; attempt++ {
		var c *nftables.Conn
		if c, err = hs.nft(host); err != nil {
			return err
		}
		err = nftset.AddSkeleton(c)
		if err == nil {
			err = c.Flush()
		}
		hs.putNFT(c, err)
		if !errors.Is(err, unix.EEXIST) {
			return err
		}
		// Another process made it: if it is ours, fine. It may also be
		// gone again already (that process's last Close): make it again.
		if err = hs.ownTable(host); !nftset.IsENOENT(err) {
			return err
		}
	}
	return err
}

// tableGone notes that the table vanished (nft flush ruleset, another
// process's last Close): the next ensureTable makes it again.
func (hs *hostState) tableGone() {
	hs.mu.Lock()
	hs.tableReady = false
	hs.mu.Unlock()
}

// commitEntries commits b, which needs the table: when the table has gone
// missing meanwhile (ENOENT) it is made again and b retried.
func (hs *hostState) commitEntries(host *netns.Handle, b *nftset.Batch) error {
	var err error
	for attempt := 0; attempt < 4; attempt++ {
		if err = hs.ensureTable(host); err != nil {
			return fmt.Errorf("nftables table: %w", err)
		}
		if err = hs.commit(host, b); !nftset.IsENOENT(err) {
			return err
		}
		hs.tableGone()
	}
	return err
}

// reserve records the prefixes and namespace of a Link about to be made
// in this process, so that its own concurrent Connects fail early and
// clearly (other processes are kept out by the claims maps). Rules have no
// namespace: nsKey 0 reserves the prefixes alone.
func reserve(hostKey, nsKey uint64, prefixes []netip.Prefix) error {
	registry.Lock()
	defer registry.Unlock()
	if nsKey != 0 && registry.nss[nsKey] {
		return fmt.Errorf("namespace net:[%d] is already connected: %w", nsKey, os.ErrExist)
	}
	for _, q := range registry.prefixes[hostKey] {
		for _, p := range prefixes {
			if q.Overlaps(p) {
				return fmt.Errorf("%w: %v is used by another link of this process", ErrOverlap, q)
			}
		}
	}
	if nsKey != 0 {
		registry.nss[nsKey] = true
	}
	registry.prefixes[hostKey] = append(registry.prefixes[hostKey], prefixes...)
	return nil
}

func release(hostKey, nsKey uint64, prefixes []netip.Prefix) {
	registry.Lock()
	defer registry.Unlock()
	if nsKey != 0 {
		delete(registry.nss, nsKey)
	}
	registry.prefixes[hostKey] = slices.DeleteFunc(registry.prefixes[hostKey], func(q netip.Prefix) bool {
		return slices.Contains(prefixes, q)
	})
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
		c, err := hs.nft(host)
		if err != nil {
			return firewall.View{}, err
		}
		v, err := firewall.Look(c)
		hs.putNFT(c, err)
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

type uplinkInfo struct {
	name  string
	index int
}

// inspectHost finds the uplink (or the default route's link: IPv4's,
// or IPv6's for an IPv6-only link), checks it is up with an address for
// each family it masquerades (IPv4, or a global IPv6 one), and, with
// checkOverlap, that the link's prefixes overlap no route or address of
// the host (the local table lists the host's own addresses). The overlap
// error names the holder (see holderOf).
func inspectHost(hs *hostState, host *netns.Handle, hc *nl.Conn, uplink string, nets networks, checkOverlap bool) (uplinkInfo, error) {
	upIdx := 0
	var linkMsg []byte
	if uplink != "" {
		msgs, err := hc.Query(nl.GetLinkByName(uplink))
		if err != nil {
			return uplinkInfo{}, fmt.Errorf("uplink %q: %w", uplink, err)
		}
		linkMsg = msgs[0].Data
		l, err := nl.DecodeLink(linkMsg)
		if err != nil {
			return uplinkInfo{}, err
		}
		upIdx = int(l.Index)
	}
	var prefixes []netip.Prefix
	if checkOverlap {
		prefixes = nets.prefixes()
	}
	defFam := nets[0].fam()
	facts, err := hs.view.Ask(host, hc, prefixes, upIdx, defFam)
	if err != nil {
		return uplinkInfo{}, fmt.Errorf("host routes: %w", err)
	}
	defaults, overlap, hasV4, hasV6 := facts.Defaults, facts.Overlap, facts.HasV4, facts.HasV6
	upIdx = facts.Uplink
	if uplink == "" {
		switch {
		case len(defaults) == 0:
			return uplinkInfo{}, fmt.Errorf("no uplink given and the host has no %s default route: name the uplink: %w", nftset.FamilyName(defFam), nl.Wrap(unix.ENODEV))
		case len(defaults) > 1 || upIdx == 0:
			return uplinkInfo{}, fmt.Errorf("%w: no uplink given and the host's %s default route leaves by several links (interface indexes %v): name the uplink", ErrInvalidConfig, nftset.FamilyName(defFam), defaults)
		}
		msgs, err := hc.Query(nl.GetLinkByIndex(upIdx))
		if err != nil {
			return uplinkInfo{}, fmt.Errorf("default route's link: %w", err)
		}
		linkMsg = msgs[0].Data
	}
	link, err := nl.DecodeLink(linkMsg)
	if err != nil {
		return uplinkInfo{}, err
	}
	up := uplinkInfo{name: link.Attributes.Name, index: int(link.Index)}
	switch {
	case link.Flags&unix.IFF_LOOPBACK != 0:
		return up, fmt.Errorf("%w: uplink %q is a loopback link: nothing leaves by it", ErrInvalidConfig, up.name)
	case link.Flags&unix.IFF_UP == 0:
		return up, fmt.Errorf("uplink %q is down: bring it up first", up.name)
	case link.Attributes.Alias != nil && strings.HasPrefix(*link.Attributes.Alias, "nsnet "):
		return up, fmt.Errorf("%w: uplink %q is the host end of an nsnet link", ErrInvalidConfig, up.name)
	}
	for _, n := range nets {
		switch {
		case n.routed:
		case n.fam() == unix.NFPROTO_IPV4 && !hasV4:
			return up, fmt.Errorf("uplink %q has no IPv4 address: masquerading needs one", up.name)
		case n.fam() == unix.NFPROTO_IPV6 && !hasV6:
			return up, fmt.Errorf("uplink %q has no global IPv6 address: masquerading IPv6 needs one (or set RoutedIPv6)", up.name)
		}
	}
	if overlap != nil {
		return up, hs.overlapErr(host, hc, *overlap)
	}
	return up, nil
}

// errDeadHolder marks an overlap with what a dead owner left: Connect
// sweeps it and tries again.
var errDeadHolder = errors.New("held by a dead owner")

// overlapErr is the ErrOverlap for route k of the host, naming the link it
// belongs to and, for one of nsnet's, its owner; it also matches
// errDeadHolder when that owner is dead.
func (hs *hostState) overlapErr(host *netns.Handle, hc *nl.Conn, k hostview.RouteKey) error {
	what := "route"
	if k.Type == unix.RTN_LOCAL {
		what = "address"
	}
	err := fmt.Errorf("%w: host %s %v", ErrOverlap, what, k.Dst)
	if k.OIF == 0 {
		return err
	}
	msgs, qerr := hc.Query(nl.GetLinkByIndex(k.OIF))
	if qerr != nil {
		return err
	}
	link, derr := nl.DecodeLink(msgs[0].Data)
	if derr != nil {
		return err
	}
	holder := fmt.Sprintf("link %s", link.Attributes.Name)
	if link.Attributes.Alias != nil {
		if o, ok := owner.Parse(*link.Attributes.Alias); ok {
			live, lerr := owner.Live(host, []string{o.ID})
			switch {
			case lerr != nil:
			case live[o.ID]:
				holder += fmt.Sprintf(" of live pid %d (nsnet owner %s)", o.PID, o.ID)
			default:
				return fmt.Errorf("%w: host %s %v of link %s, %w (pid %d, owner %s)", ErrOverlap, what, k.Dst, link.Attributes.Name, errDeadHolder, o.PID, o.ID)
			}
		}
	}
	return fmt.Errorf("%w: host %s %v of %s", ErrOverlap, what, k.Dst, holder)
}
