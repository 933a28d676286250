package nat

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// Link is one namespace connected to the outside through NAT. Its fields
// say what Connect made; do not change them. Close undoes it all.
type Link struct {
	Prefix   netip.Prefix // the namespace's network
	Uplink   string       // the host link its traffic leaves by
	HostVeth string       // host end of the veth pair
	NSVeth   string       // end inside the namespace
	HostAddr netip.Prefix // address of HostVeth, the namespace's gateway
	NSAddr   netip.Prefix // address of NSVeth

	owned
}

// owned is what a Link or Rules holds in the host: set elements, a share
// of the uplink's forwarding, a reserved prefix; close gives it all back.
type owned struct {
	host    *netns.Handle // our own handle to the host namespace (nil: current)
	hostKey uint64
	nsKey   uint64 // connected namespace, 0 for Rules
	// nsRef holds the connected namespace open while the Link lives: its
	// inode, nsKey, cannot then be reused by a new namespace that the
	// registry would mistake for this one.
	nsRef *netns.Handle
	// hostIdx and nsIdx are the interface indexes of the pair's ends.
	hostIdx, nsIdx int
	uplinkIdx      int
	elems          elements
	hs             *hostState

	mu     sync.Mutex
	closed bool
	err    error
}

func (l *Link) String() string {
	return fmt.Sprintf("%s: %s (%s) <-> %s (%s) via %s", l.Prefix, l.HostVeth, l.HostAddr.Addr(), l.NSVeth, l.NSAddr.Addr(), l.Uplink)
}

// Connect gives the namespace ns a path to the outside world through the
// link uplink of the current namespace, with cidr as its network:
// Config{}.Connect(ns, uplink, cidr). An empty uplink means the link of the
// default route.
func Connect(ns *netns.Handle, uplink string, cidr netip.Prefix) (*Link, error) {
	return Config{}.Connect(ns, uplink, cidr)
}

// hostState is what this process knows of one host namespace: whether the
// table is in place, the uplinks whose forwarding it turned on, and the
// prefixes and namespaces of its live links.
type hostState struct {
	mu         sync.Mutex // guards the fields below
	fwdMu      sync.Mutex // serialises uplink forwarding decisions with their changes
	tableReady bool
	uplinks    map[int]*uplinkRef
	links      int
	routes     routeCache
	conns      []*nl.Conn       // idle rtnetlink sockets in the host namespace
	nfts       []*nftables.Conn // idle lasting nftables connections there
	// dropChecked and dropChain remember checkForeignDrop's finding.
	dropChecked bool
	dropChain   string
}

// enter counts a Link being made or alive; the caches and the table stay
// while there is one.
func (hs *hostState) enter() {
	hs.mu.Lock()
	hs.links++
	hs.mu.Unlock()
}

// leave uncounts one; after the last, it closes the cached sockets (no fd
// outlives the last link) and removes the table if no process uses it.
func (hs *hostState) leave(host *netns.Handle) error {
	hs.mu.Lock()
	hs.links--
	last := hs.links == 0
	if last {
		hs.routes.close()
		for _, c := range hs.conns {
			c.Close()
		}
		for _, c := range hs.nfts {
			c.CloseLasting()
		}
		hs.conns, hs.nfts = nil, nil
		// Forget the rest too: with no link left, nothing holds the host
		// namespace open, and a new namespace may get its inode (the key).
		// Uplink counts can only be left over here if a Close step failed.
		clear(hs.uplinks)
		hs.dropChecked, hs.dropChain = false, ""
	}
	hs.mu.Unlock()
	if last {
		return hs.dropTableIfUnused(host)
	}
	return nil
}

// conn returns an idle host socket, or dials one.
func (hs *hostState) conn(host *netns.Handle) (*nl.Conn, error) {
	hs.mu.Lock()
	if n := len(hs.conns); n > 0 {
		c := hs.conns[n-1]
		hs.conns = hs.conns[:n-1]
		hs.mu.Unlock()
		return c, nil
	}
	hs.mu.Unlock()
	return nl.Dial(host)
}

// putConn keeps c for the next operation while links exist.
func (hs *hostState) putConn(c *nl.Conn) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.links > 0 && len(hs.conns) < 4 {
		hs.conns = append(hs.conns, c)
		return
	}
	c.Close()
}

type uplinkRef struct {
	users      int  // this process's links out of the uplink
	registered bool // this process is in the fwd set for it
}

var registry = struct {
	sync.Mutex
	hosts    map[uint64]*hostState
	prefixes map[uint64][]netip.Prefix // host ns → live prefixes
	nss      map[uint64]bool           // connected namespaces
}{hosts: map[uint64]*hostState{}, prefixes: map[uint64][]netip.Prefix{}, nss: map[uint64]bool{}}

// reserve records the prefix and namespace of a Link about to be made, so
// that concurrent Connects cannot both take them.
func reserve(hostKey, nsKey uint64, p netip.Prefix) (*hostState, error) {
	registry.Lock()
	defer registry.Unlock()
	if registry.nss[nsKey] {
		return nil, fmt.Errorf("namespace net:[%d] is already connected: %w", nsKey, os.ErrExist)
	}
	for _, q := range registry.prefixes[hostKey] {
		if q.Overlaps(p) {
			return nil, fmt.Errorf("%w: %v is used by another link", ErrOverlap, q)
		}
	}
	registry.nss[nsKey] = true
	registry.prefixes[hostKey] = append(registry.prefixes[hostKey], p)
	return hostForLocked(hostKey), nil
}

// hostFor returns this process's state of the host namespace hostKey.
func hostFor(hostKey uint64) *hostState {
	registry.Lock()
	defer registry.Unlock()
	return hostForLocked(hostKey)
}

func hostForLocked(hostKey uint64) *hostState {
	hs := registry.hosts[hostKey]
	if hs == nil {
		hs = &hostState{uplinks: map[int]*uplinkRef{}}
		registry.hosts[hostKey] = hs
	}
	return hs
}

func release(hostKey, nsKey uint64, p netip.Prefix) {
	registry.Lock()
	defer registry.Unlock()
	delete(registry.nss, nsKey)
	ps := registry.prefixes[hostKey]
	for i, q := range ps {
		if q == p {
			registry.prefixes[hostKey] = append(ps[:i:i], ps[i+1:]...)
			break
		}
	}
}

// failHook, when set by tests, is called before each step of Connect and
// Close; an error it returns fails that step.
var failHook func(step string) error

func hook(step string) error {
	if failHook != nil {
		return failHook(step)
	}
	return nil
}

// ownerMark is written on the host veth (as its ifalias) and on every set
// element, so that Sweep can find what a dead process left behind.
var ownerMark = func() string {
	return fmt.Sprintf("nsnet pid=%d start=%d", os.Getpid(), processStart(os.Getpid()))
}()

func (cfg Config) validate(ns *netns.Handle, uplink string, cidr netip.Prefix) (hostAddr, nsAddr netip.Addr, err error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	switch {
	case ns == nil:
		return hostAddr, nsAddr, bad("namespace is nil (the host's own); give the namespace to connect")
	case ns.Fd() < 0:
		return hostAddr, nsAddr, fmt.Errorf("namespace: %w", netns.ErrClosed)
	case cfg.HostNS != nil && cfg.HostNS.Fd() < 0:
		return hostAddr, nsAddr, fmt.Errorf("host namespace: %w", netns.ErrClosed)
	case ns.Equal(cfg.HostNS):
		return hostAddr, nsAddr, bad("namespace %v is the host namespace itself", ns)
	}
	if err := validPrefix(cidr); err != nil {
		return hostAddr, nsAddr, err
	}
	if uplink != "" {
		if err := nl.CheckIfName(uplink); err != nil {
			return hostAddr, nsAddr, fmt.Errorf("uplink: %w", err)
		}
	}
	for _, n := range []string{cfg.HostVeth, cfg.NSVeth} {
		if n != "" {
			if err := nl.CheckIfName(n); err != nil {
				return hostAddr, nsAddr, err
			}
		}
	}
	if cfg.MTU != 0 && (cfg.MTU < 576 || cfg.MTU > 65535) {
		return hostAddr, nsAddr, bad("MTU %d outside 576..65535", cfg.MTU)
	}
	return cfg.addresses(cidr)
}

// addresses returns the host and namespace addresses for cidr: those of
// cfg, or by default the first two host addresses.
func (cfg Config) addresses(cidr netip.Prefix) (hostAddr, nsAddr netip.Addr, err error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	hostAddr, nsAddr = cfg.HostAddr, cfg.NSAddr
	if !hostAddr.IsValid() {
		hostAddr = cidr.Addr().Next()
	}
	if !nsAddr.IsValid() {
		nsAddr = hostAddr.Next()
		if nsAddr == lastAddr(cidr) {
			nsAddr = cidr.Addr().Next()
		}
	}
	for _, a := range []netip.Addr{hostAddr, nsAddr} {
		if !cidr.Contains(a) || a == cidr.Addr() || a == lastAddr(cidr) {
			return hostAddr, nsAddr, bad("address %v is not a host address of %v", a, cidr)
		}
	}
	if hostAddr == nsAddr {
		return hostAddr, nsAddr, bad("host and namespace addresses are both %v", hostAddr)
	}
	return hostAddr, nsAddr, nil
}

// validPrefix checks that cidr can be a namespace's network.
func validPrefix(cidr netip.Prefix) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	switch {
	case !cidr.IsValid() || !cidr.Addr().Is4() || cidr.Addr().Zone() != "":
		return bad("prefix %v is not an IPv4 prefix", cidr)
	case cidr.Masked() != cidr:
		return bad("prefix %v has host bits set (did you mean %v?)", cidr, cidr.Masked())
	case cidr.Bits() > 30:
		return bad("prefix %v has no room for two hosts (at most /30)", cidr)
	case cidr.Bits() < 8:
		return bad("prefix %v is larger than /8", cidr)
	case cidr.Addr().IsLoopback() || cidr.Addr().IsMulticast() || cidr.Addr().IsLinkLocalUnicast() ||
		cidr.Addr().IsUnspecified() || cidr.Overlaps(netip.MustParsePrefix("240.0.0.0/4")):
		return bad("prefix %v is loopback, multicast, link-local or reserved", cidr)
	}
	return nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}

func randomVethName() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 11)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "nsn-" + string(b)
}

// Connect connects ns to the outside world through uplink (in c.HostNS;
// "" for the link of the default route), giving it the network cidr. It is
// the tutorial in one call:
//
//  1. checks everything before touching the kernel: ns is given and not
//     the host namespace, cidr is an IPv4 prefix with room for two hosts
//     and overlaps no address or route of the host nor another live Link,
//     the uplink exists, is up and has an IPv4 address;
//  2. creates the veth pair with its peer made inside ns, both ends up
//     (and lo inside), the two addresses, and ns's default route via the
//     host end;
//  3. turns on IPv4 forwarding for exactly the host end and the uplink
//     (per link; the global ip_forward switch is left alone), restoring the
//     uplink's setting when its last Link closes;
//  4. adds the link to the sets of the library's nftables table: masquerade
//     for cidr leaving by the uplink, forwarding out of the link, replies
//     back in, nothing unsolicited, no spoofed sources, no traffic between
//     links unless AllowSiblings.
//
// A failure part-way undoes what was done and returns the first error,
// naming the step. Needs CAP_NET_ADMIN in both namespaces. Safe for
// concurrent use with other Connects and Closes.
func (c Config) Connect(ns *netns.Handle, uplink string, cidr netip.Prefix) (*Link, error) {
	l, err := c.connect(ns, uplink, cidr)
	if err != nil {
		return nil, fmt.Errorf("nat: connect %v: %w", cidr, err)
	}
	return l, nil
}

func (c Config) connect(ns *netns.Handle, uplink string, cidr netip.Prefix) (*Link, error) {
	hostAddr, nsAddr, err := c.validate(ns, uplink, cidr)
	if err != nil {
		return nil, err
	}
	l := &Link{
		Prefix:   cidr,
		HostVeth: c.HostVeth,
		NSVeth:   c.NSVeth,
		HostAddr: netip.PrefixFrom(hostAddr, cidr.Bits()),
		NSAddr:   netip.PrefixFrom(nsAddr, cidr.Bits()),
	}
	l.hostKey, l.nsKey = c.HostNS.ID(), ns.ID()
	if l.HostVeth == "" {
		l.HostVeth = randomVethName()
	}
	if l.NSVeth == "" {
		l.NSVeth = "eth0"
	}

	// The namespace's socket is opened while the host is inspected: it
	// depends on nothing else.
	nsConn := make(chan dialed, 1)
	go func() {
		if err := hook("namespace socket"); err != nil {
			nsConn <- dialed{err: err}
			return
		}
		c, err := nl.Dial(ns)
		nsConn <- dialed{c, err}
	}()
	hs := hostFor(l.hostKey)
	hs.enter() // keeps the caches alive until this Connect is done
	// The first Connect in a host makes the table, alongside the checks.
	table := hs.prepareTable(c.HostNS)
	if !c.AllowForeignDrop {
		if err := hs.checkForeignDrop(c.HostNS); err != nil {
			table()
			hs.leave(c.HostNS)
			if d := <-nsConn; d.c != nil {
				d.c.Close()
			}
			return nil, err
		}
	}
	up, hc, err := func() (uplinkInfo, *nl.Conn, error) {
		hc, err := hs.conn(c.HostNS)
		if err != nil {
			return uplinkInfo{}, nil, err
		}
		if err := hook("inspect host"); err != nil {
			return uplinkInfo{}, hc, fmt.Errorf("inspect host: %w", err)
		}
		up, err := inspectHost(hs, c.HostNS, hc, uplink, cidr, true)
		if err != nil {
			return up, hc, err
		}
		l.hs, err = reserve(l.hostKey, l.nsKey, cidr)
		return up, hc, err
	}()
	if hc != nil {
		defer hs.putConn(hc) // runs after leave below: then it closes hc
	}
	if err != nil {
		table() // settled before leave, which may remove the table again
		hs.leave(c.HostNS)
		if d := <-nsConn; d.c != nil {
			d.c.Close()
		}
		return nil, err
	}
	l.Uplink, l.uplinkIdx = up.name, up.index

	// From here on every step records its undo; fail runs them in reverse.
	var (
		undoMu sync.Mutex
		undo   []func() error
	)
	pushUndo := func(f func() error) {
		undoMu.Lock()
		undo = append(undo, f)
		undoMu.Unlock()
	}
	fail := func(err error) (*Link, error) {
		table()
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]() // best effort: the first error is the one returned
		}
		release(l.hostKey, l.nsKey, cidr)
		hs.leave(l.host)
		l.host.Close()
		l.nsRef.Close()
		return nil, err
	}
	if l.nsRef, err = dupHandle(ns); err == nil {
		l.host, err = dupHandle(c.HostNS)
	}
	if err != nil {
		if d := <-nsConn; d.c != nil {
			d.c.Close()
		}
		return fail(fmt.Errorf("host namespace: %w", err))
	}
	l.elems = linkElements(l.Prefix, l.HostVeth, l.Uplink, ownerMark, c.AllowSiblings)

	// The steps run as three lanes, each in order, the lanes side by side
	// (Connect's time is the longest lane, not the sum of all):
	//   host:      veth pair (peer made in ns) -> host address, forwarding, owner mark
	//   namespace: socket -> (after the veth) lo and peer up -> address, default route
	//   nftables:  the link's set elements (names only: they need no link)
	vethDone := make(chan bool, 1) // true if the pair exists
	var wg sync.WaitGroup
	var nsErr, nftErr error
	var lane nsLane
	wg.Add(2)
	go func() {
		defer wg.Done()
		lane, nsErr = c.namespaceLane(nsConn, l, hostAddr, vethDone)
	}()
	go func() {
		defer wg.Done()
		if nftErr = hook("nftables"); nftErr != nil {
			nftErr = fmt.Errorf("nftables: %w", nftErr)
			return
		}
		if nftErr = table(); nftErr != nil {
			nftErr = fmt.Errorf("nftables table: %w", nftErr)
			return
		}
		// The uplink's forwarding share and the link's entries, in one
		// transaction when this process registers as the uplink's user.
		if nftErr = hook("uplink forwarding"); nftErr != nil {
			nftErr = fmt.Errorf("uplink forwarding: %w", nftErr)
			return
		}
		uc, err := hs.conn(c.HostNS)
		if err != nil {
			nftErr = fmt.Errorf("nftables: %w", err)
			return
		}
		defer hs.putConn(uc)
		if nftErr = hs.acquireUplink(uc, c.HostNS, up, l.elems); nftErr != nil {
			return
		}
		pushUndo(func() error {
			return hs.flush(c.HostNS, func(c *nftables.Conn) error { return l.elems.apply(c, false) })
		})
		pushUndo(func() error { return hs.releaseUplink(hc, c.HostNS, up.index, up.name, elements{}) })
	}()
	hostErr := func() error {
		if err := hook("veth"); err != nil {
			vethDone <- false
			return fmt.Errorf("veth: %w", err)
		}
		// Both ends get interface indexes picked here, at random from a
		// range nothing else uses (see randomIndex), so no round trip is
		// needed to learn them: each later batch can name the links by
		// index at once. (Looking a veth up also costs the kernel a scan
		// of every namespace id the host has, which grows with the links.)
		// The owner mark (ifalias, which the kernel ignores on creation)
		// goes in the same batch when the name is our own random one, so
		// not even a crash right after leaves an unmarked pair behind. A
		// name the caller chose may be a link of theirs if the create
		// fails: then the mark goes by index with the next batch.
		markedNow := c.HostVeth == ""
		var err error
		for attempt := 0; ; attempt++ {
			l.hostIdx, l.nsIdx = randomIndex(), randomIndex()
			reqs := []nl.Request{nl.NewVeth(nl.Veth{Name: l.HostVeth, PeerName: l.NSVeth, PeerNSFd: ns.Fd(),
				MTU: c.MTU, Up: true, Index: l.hostIdx, PeerIndex: l.nsIdx})}
			if markedNow {
				reqs = append(reqs, nl.SetAliasByName(l.HostVeth, ownerMark))
			}
			var errs []error
			_, errs, err = hc.Do(reqs...)
			if err == nil {
				err = errs[0]
			}
			if !errors.Is(err, unix.EBUSY) || attempt == 3 {
				break
			}
		}
		if err != nil {
			vethDone <- false
			return fmt.Errorf("veth %s peer %s: %w", l.HostVeth, l.NSVeth, err)
		}
		// Deleting the host end takes the peer, both addresses and the
		// namespace's route with it.
		pushUndo(func() error { return hc.Exec(nl.DeleteLink(l.hostIdx, "")) })
		vethDone <- true
		if err := hook("host address"); err != nil {
			return fmt.Errorf("host address: %w", err)
		}
		reqs := []nl.Request{nl.NewAddr(l.hostIdx, l.HostAddr, 0, false), nl.SetForwarding(l.hostIdx, true)}
		if !markedNow {
			reqs = append(reqs, nl.SetAlias(l.hostIdx, ownerMark))
		}
		if err := hc.Exec(reqs...); err != nil {
			return fmt.Errorf("host address and forwarding: %w", err)
		}
		return nil
	}()
	wg.Wait()
	if lane.c != nil {
		defer lane.c.Close()
	}
	if err := errors.Join(hostErr, nsErr, nftErr); err != nil {
		return fail(firstOf(hostErr, nsErr, nftErr))
	}
	if lane.loIndex != 0 {
		err := hook("namespace lo")
		if err == nil {
			err = lane.c.Exec(nl.SetLinkUp(lane.loIndex, "", true))
		}
		if err != nil {
			return fail(fmt.Errorf("namespace lo: %w", err))
		}
	}
	return l, nil
}

func firstOf(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

type dialed struct {
	c   *nl.Conn
	err error
}

// namespaceLane does the namespace's side of Connect on the socket opened
// for it: lo up at once, then, once the host lane has made the pair, the
// peer up, the address and the default route. Nothing to undo: the peer
// goes with the pair, and lo up is harmless.
func (c Config) namespaceLane(nsConn <-chan dialed, l *Link, gw netip.Addr, vethDone <-chan bool) (lane nsLane, err error) {
	d := <-nsConn
	lane.c = d.c
	if !<-vethDone {
		return lane, nil // the host lane failed and says why
	}
	if d.err != nil {
		return lane, fmt.Errorf("namespace socket: %w", d.err)
	}
	nc := d.c
	if err := hook("namespace links"); err != nil {
		return lane, fmt.Errorf("namespace links: %w", err)
	}
	// lo is looked up, not brought up yet (see nsLane); the peer, whose
	// index the host lane chose, comes up with its address and route.
	replies, errs, err := nc.Do(nl.GetLinkByName("lo"), nl.SetLinkUp(l.nsIdx, "", true),
		nl.NewAddr(l.nsIdx, l.NSAddr, 0, false),
		nl.NewRoute(nl.RouteSpec{Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Gateway: gw,
			Protocol: unix.RTPROT_BOOT, Type: unix.RTN_UNICAST}, false))
	if err == nil {
		err = errors.Join(errs...)
	}
	if err != nil {
		return lane, fmt.Errorf("namespace links, address and route: %w", err)
	}
	lo, err := nl.DecodeLink(replies[0][0].Data)
	if err != nil {
		return lane, fmt.Errorf("namespace links: %w", err)
	}
	if lo.Flags&unix.IFF_UP == 0 {
		lane.loIndex = int(lo.Index)
	}
	return lane, nil
}

// nsLane is what the namespace lane leaves for the end of Connect: its
// socket, and lo's index if lo is down. lo comes up only once every lane
// has succeeded, since bringing a link up cannot be undone exactly (the
// kernel attaches a qdisc that stays after it goes down again).
type nsLane struct {
	c       *nl.Conn
	loIndex int
}

// randomIndex picks an interface index for a new link from the top of the
// range, [2^29, 2^30): the kernel hands out indexes counting up from 1, so
// these are never taken by links it numbers itself, and a collision with
// another chosen one (EBUSY) is retried.
func randomIndex() int {
	var b [4]byte
	rand.Read(b[:])
	return 1<<29 + int(binary.NativeEndian.Uint32(b[:])&(1<<29-1))
}

// acquireUplink counts one more user of the uplink in this process and
// adds the link's set entries e: the first user registers the process in
// the fwd set in the same transaction (see fwdRegister), the others add e
// alone.
func (hs *hostState) acquireUplink(hc *nl.Conn, host *netns.Handle, up uplinkInfo, e elements) error {
	// fwdMu is taken even by later users: it makes them wait until a first
	// user's registration (forwarding on) is done. It is not held while
	// they add their entries.
	hs.fwdMu.Lock()
	hs.mu.Lock()
	ref := hs.uplinks[up.index]
	if ref == nil {
		ref = &uplinkRef{}
		hs.uplinks[up.index] = ref
	}
	ref.users++
	// The first user registers; so does a later one if the first failed.
	first := !ref.registered
	hs.mu.Unlock()
	if !first {
		hs.fwdMu.Unlock()
		if err := hs.addElements(host, e); err != nil {
			hs.mu.Lock()
			ref.users--
			hs.mu.Unlock()
			return fmt.Errorf("nftables: %w", err)
		}
		return nil
	}
	defer hs.fwdMu.Unlock()
	if err := withHostLock(host, func() error { return hs.fwdRegister(hc, host, up, e) }); err != nil {
		hs.mu.Lock()
		ref.users--
		if ref.users == 0 {
			delete(hs.uplinks, up.index)
		}
		hs.mu.Unlock()
		return fmt.Errorf("uplink forwarding: %w", err)
	}
	hs.mu.Lock()
	ref.registered = true
	hs.mu.Unlock()
	return nil
}

// releaseUplink drops one user of the uplink and removes the link's set
// entries e; the last user in this process also unregisters it, in the
// same transaction (see fwdUnregister): each nftables commit that removes
// entries can cost the kernel milliseconds, so one is better than two.
func (hs *hostState) releaseUplink(hc *nl.Conn, host *netns.Handle, index int, name string, e elements) error {
	hs.fwdMu.Lock()
	defer hs.fwdMu.Unlock()
	hs.mu.Lock()
	ref := hs.uplinks[index]
	last := false
	if ref != nil {
		ref.users--
		if last = ref.users == 0; last {
			delete(hs.uplinks, index)
		}
	}
	hs.mu.Unlock()
	if !last {
		if e.empty() {
			return nil
		}
		return hs.flush(host, func(c *nftables.Conn) error { return e.apply(c, false) })
	}
	return withHostLock(host, func() error { return hs.fwdUnregister(hc, host, index, name, e) })
}

// An uplink's forwarding is shared by every nsnet process with links out
// of it, and must go back to what it was before the first of them once the
// last is gone, whoever that is and even if some crashed. The fwd set
// holds one entry per (uplink, process), commented with the owner mark and
// the original setting ("orig=off" or "orig=on"); registrations and
// unregistrations happen under a lock shared by the processes of the host
// namespace (withHostLock), so a check and the change it decides cannot
// interleave with another process's.
const (
	origOff = " orig=off"
	origOn  = " orig=on"
)

func fwdKey(uplink string, pid int) []byte {
	k := ifname(uplink)
	return binary.BigEndian.AppendUint32(k, uint32(pid))
}

type fwdEntry struct {
	el      nftables.SetElement
	uplink  string
	alive   bool
	mine    bool
	origOff bool
}

func readFwd(c *nftables.Conn, uplink string) ([]fwdEntry, error) {
	els, err := c.GetSetElements(setByName[setFwd])
	if err != nil {
		return nil, fmt.Errorf("read fwd set: %w", err)
	}
	var out []fwdEntry
	for _, e := range els {
		if len(e.Key) < unix.IFNAMSIZ+4 {
			continue
		}
		name := strings.TrimRight(string(e.Key[:unix.IFNAMSIZ]), "\x00")
		if uplink != "" && name != uplink {
			continue
		}
		o, ok := parseOwner(e.Comment)
		out = append(out, fwdEntry{
			el: e, uplink: name, alive: ok && o.alive(), mine: ok && o.pid == os.Getpid(),
			origOff: strings.HasSuffix(e.Comment, origOff),
		})
	}
	return out, nil
}

// fwdRegister records this process as a user of the uplink. If no live
// process uses it yet, the original setting is the current one — unless a
// dead user left a record saying it was off — and forwarding is turned on.
// Otherwise the live users' record of the original is copied.
func (hs *hostState) fwdRegister(hc *nl.Conn, host *netns.Handle, up uplinkInfo, e elements) error {
	c, err := nftConn(host)
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	entries, err := readFwd(c, up.name)
	needTable := isENOENT(err) // another process removed it since: make it again
	if err != nil && !needTable {
		return err
	}
	var dead []nftables.SetElement
	live, wasOff := false, false
	for _, e := range entries {
		switch {
		case e.alive && !e.mine:
			live, wasOff = true, e.origOff
		case !e.alive:
			dead = append(dead, e.el)
			wasOff = wasOff || e.origOff
		}
	}
	turnOn := false
	if !live {
		msgs, err := hc.Query(nl.GetLinkByIndex(up.index))
		if err != nil {
			return err
		}
		on, _ := nl.Forwarding(msgs[0].Data)
		wasOff, turnOn = wasOff || !on, !on
	}
	mark := ownerMark + origOn
	if wasOff {
		mark = ownerMark + origOff
	}
	commit := func(c *nftables.Conn) error {
		if needTable {
			if err := addSkeleton(c); err != nil {
				return err
			}
		}
		if len(dead) > 0 {
			if err := c.SetDeleteElements(setByName[setFwd], dead); err != nil {
				return err
			}
		}
		if err := e.apply(c, true); err != nil {
			return err
		}
		return c.SetAddElements(setByName[setFwd], []nftables.SetElement{{Key: fwdKey(up.name, os.Getpid()), Comment: mark}})
	}
	// Another process may make or remove the table between the read and
	// the commit (it removes it only when it holds no entries, so none of
	// what was read is lost): follow it.
	for attempt := 0; ; attempt++ {
		err = hs.flush(host, commit)
		switch {
		case err == nil:
		case needTable && errors.Is(err, unix.EEXIST) && attempt < 3:
			needTable = false
			continue
		case !needTable && isENOENT(err) && attempt < 3:
			needTable = true
			continue
		default:
			return err
		}
		break
	}
	hs.mu.Lock()
	hs.tableReady = true
	hs.mu.Unlock()
	if turnOn {
		if err := hc.Exec(nl.SetForwarding(up.index, true)); err != nil {
			hs.flush(host, func(c *nftables.Conn) error {
				e.apply(c, false)
				return c.SetDeleteElements(setByName[setFwd], []nftables.SetElement{{Key: fwdKey(up.name, os.Getpid())}})
			})
			return err
		}
	}
	return nil
}

// fwdUnregister removes this process's record; if no live user is left,
// forwarding goes back off when it was off originally.
func (hs *hostState) fwdUnregister(hc *nl.Conn, host *netns.Handle, index int, name string, e elements) error {
	c, err := nftConn(host)
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	entries, err := readFwd(c, name)
	if isENOENT(err) {
		return nil // the table is gone: someone swept it all
	}
	if err != nil {
		return err
	}
	var gone []nftables.SetElement
	others, wasOff := false, false
	for _, e := range entries {
		if e.alive && !e.mine {
			others = true
			continue
		}
		gone = append(gone, e.el)
		wasOff = wasOff || e.origOff
	}
	if !others && wasOff {
		if err := hc.Exec(nl.SetForwarding(index, false)); err != nil {
			return err
		}
	}
	if len(gone) == 0 && e.empty() {
		return nil
	}
	return hs.flush(host, func(c *nftables.Conn) error {
		if err := e.apply(c, false); err != nil {
			return err
		}
		if len(gone) == 0 {
			return nil
		}
		return c.SetDeleteElements(setByName[setFwd], gone)
	})
}

// withHostLock runs fn while holding a lock shared by every process in the
// host namespace: an abstract unix socket name, which is scoped to a
// network namespace and bound by one socket at a time, and released by the
// kernel when its holder exits, even by SIGKILL.
func withHostLock(host *netns.Handle, fn func() error) error {
	var fd int
	bind := func() error {
		var err error
		fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: "@nsnet-uplink-forwarding"}); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := host.Do(bind)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EADDRINUSE) || time.Now().After(deadline) {
			return fmt.Errorf("host lock: %w", err)
		}
		time.Sleep(time.Millisecond)
	}
	defer unix.Close(fd)
	return fn()
}

// isENOENT reports a missing table or set. google/nftables formats some
// receive errors with %v, which drops the errno from the chain, so the
// message is the fallback.
func isENOENT(err error) bool {
	return err != nil && (errors.Is(err, unix.ENOENT) || strings.HasSuffix(err.Error(), unix.ENOENT.Error()))
}

// dupHandle opens a handle of our own to h's namespace, so that Close
// works even if the caller has closed h by then. nil stays nil.
func dupHandle(h *netns.Handle) (*netns.Handle, error) {
	if h == nil {
		return nil, nil
	}
	fd, err := h.FD()
	if err != nil {
		return nil, err
	}
	return netns.OpenPath(fmt.Sprintf("/proc/self/fd/%d", fd))
}

// nftConn opens a lasting nftables connection in the host namespace, with
// a read buffer large enough for the acknowledgements of a big batch (the
// default one overflows with ENOBUFS at a few hundred messages).
func nftConn(host *netns.Handle) (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
		return c.SetReadBuffer(4 << 20)
	})}
	if host != nil {
		fd, err := host.FD()
		if err != nil {
			return nil, err
		}
		opts = append(opts, nftables.WithNetNSFd(fd))
	}
	return nftables.New(opts...)
}

// checkForeignDrop looks, once per host state (again after the last link
// went), for a forward base chain of another ip or inet table whose policy
// is drop, and fails with ErrForeignDrop naming it.
func (hs *hostState) checkForeignDrop(host *netns.Handle) error {
	hs.mu.Lock()
	checked, found := hs.dropChecked, hs.dropChain
	hs.mu.Unlock()
	if !checked {
		found = ""
		c, err := nftConn(host)
		if err != nil {
			return err
		}
		defer c.CloseLasting()
		chains, err := c.ListChains()
		if err != nil {
			return fmt.Errorf("list nftables chains: %w", err)
		}
		for _, ch := range chains {
			fam := ch.Table.Family
			if ch.Table.Name == TableName || (fam != nftables.TableFamilyIPv4 && fam != nftables.TableFamilyINet) ||
				ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward ||
				ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop {
				continue
			}
			family := "ip"
			if fam == nftables.TableFamilyINet {
				family = "inet"
			}
			found = fmt.Sprintf("%s %s %s", family, ch.Table.Name, ch.Name)
			break
		}
		hs.mu.Lock()
		hs.dropChecked, hs.dropChain = true, found
		hs.mu.Unlock()
	}
	if found != "" {
		return fmt.Errorf("%w: chain %q drops forwarded packets that nsnet's table accepts; accept the namespace's traffic there (see Config.AllowForeignDrop) and set AllowForeignDrop", ErrForeignDrop, found)
	}
	return nil
}

// prepareTable starts making the library's table if this process has not
// made or seen it in this host, and returns a function that waits for that
// and returns its error (nil at once when there was nothing to do).
// Another process making it first (EEXIST) is fine.
func (hs *hostState) prepareTable(host *netns.Handle) func() error {
	hs.mu.Lock()
	ready := hs.tableReady
	hs.mu.Unlock()
	if ready {
		return func() error { return nil }
	}
	ch := make(chan error, 1)
	go func() {
		err := hook("nftables table")
		if err == nil {
			err = hs.flush(host, addSkeleton)
		}
		if err == nil || errors.Is(err, unix.EEXIST) {
			err = nil
			hs.mu.Lock()
			hs.tableReady = true
			hs.mu.Unlock()
		}
		ch <- err
	}()
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() { err = <-ch })
		return err
	}
}

// addElements adds a link's elements in one transaction, creating the
// table first if this process has not seen it yet. The table is created
// with NLM_F_EXCL in the same transaction as the elements, so if another
// process made it meanwhile the whole transaction fails and is retried with
// the elements alone; if it vanished (nft flush ruleset), the retry goes the
// other way.
func (hs *hostState) addElements(host *netns.Handle, e elements) error {
	hs.mu.Lock()
	withTable := !hs.tableReady
	hs.mu.Unlock()
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = hs.flush(host, func(c *nftables.Conn) error {
			if withTable {
				if err := addSkeleton(c); err != nil {
					return err
				}
			}
			return e.apply(c, true)
		})
		switch {
		case err == nil:
			hs.mu.Lock()
			hs.tableReady = true
			hs.mu.Unlock()
			return nil
		case withTable && errors.Is(err, unix.EEXIST):
			withTable = false
		case !withTable && errors.Is(err, unix.ENOENT):
			withTable = true
		default:
			return err
		}
	}
	return err
}

// flush queues a transaction with queue and commits it, on a pooled
// connection. A connection that saw any error is dropped, never reused: a
// google/nftables Conn that failed to serialise a message stays failed.
func (hs *hostState) flush(host *netns.Handle, queue func(*nftables.Conn) error) error {
	hs.mu.Lock()
	var c *nftables.Conn
	if n := len(hs.nfts); n > 0 {
		c, hs.nfts = hs.nfts[n-1], hs.nfts[:n-1]
	}
	hs.mu.Unlock()
	if c == nil {
		var err error
		if c, err = nftConn(host); err != nil {
			return err
		}
	}
	err := queue(c)
	if err == nil {
		err = c.Flush()
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if err != nil || hs.links == 0 || len(hs.nfts) >= 4 {
		c.CloseLasting()
	} else {
		hs.nfts = append(hs.nfts, c)
	}
	return err
}

// Close undoes everything Connect made: the uplink's forwarding setting
// if this was its last user and it was off before, the set elements (and
// the library's table with the last link of the process when no other
// process has links in it), and the veth pair, which takes its addresses
// and the namespace's route with it; the last two side by side, as each
// waits for an RCU grace period. The namespace itself belongs to the
// caller and stays, with lo up. Close goes on after a failed step
// and returns all errors joined. It is idempotent: a second call returns
// the first call's result.
func (l *Link) Close() error { return l.owned.close(l.Prefix, l.HostVeth, l.Uplink) }

// close removes the elements, deletes vethToDelete if not "", and releases
// the uplink and the prefix.
func (o *owned) close(prefix netip.Prefix, vethToDelete, uplinkName string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return o.err
	}
	o.closed = true
	var errs []error
	fault := func(step string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", step, err))
		}
	}
	hs := o.hs
	release(o.hostKey, o.nsKey, prefix)
	hc, err := hs.conn(o.host)
	fault("netlink", err)
	// The set entries and the uplink's share go in one transaction (and,
	// after the last link, the table), then the veth. Not side by side:
	// the kernel makes an nftables commit wait while a link is being
	// unregistered, so overlapping them only made both slower. Each step
	// goes on after a failed one; the test hooks can fail any of them.
	if hc != nil {
		errU, errN := hook("close uplink forwarding"), hook("close nftables")
		fault("uplink forwarding", errU)
		fault("nftables", errN)
		e := o.elems
		if errN != nil {
			e = elements{} // the fault leaves the entries
		}
		switch {
		case errU == nil:
			fault("uplink forwarding and nftables", hs.releaseUplink(hc, o.host, o.uplinkIdx, uplinkName, e))
		case !e.empty():
			fault("nftables", hs.flush(o.host, func(c *nftables.Conn) error { return e.apply(c, false) }))
		}
	}
	fault("nftables table", hs.leave(o.host))
	if hc != nil {
		if vethToDelete != "" {
			err := hook("close veth")
			if err == nil {
				err = hc.Exec(nl.DeleteLink(0, vethToDelete))
			}
			fault("veth", err)
		}
		hs.putConn(hc)
	}
	o.host.Close()
	o.nsRef.Close()
	if len(errs) > 0 {
		o.err = fmt.Errorf("nat: close %v: %w", prefix, errors.Join(errs...))
	}
	return o.err
}

// dropTableIfUnused deletes the table when its links set is empty: no
// process has a link in it any more.
func (hs *hostState) dropTableIfUnused(host *netns.Handle) error {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.links != 0 {
		return nil // a Connect came in meanwhile
	}
	raw, err := dialNFT(host)
	if err != nil {
		return err
	}
	defer raw.Close()
	c, err := nftConn(host)
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	// Read the generation, check that no process has anything in the
	// table, and delete it only if nothing committed in between (another
	// process adding its entries): else look again.
	for attempt := 0; attempt < 5; attempt++ {
		gen, err := ruleGeneration(raw)
		if err != nil {
			return err
		}
		// Every Link and Rules has an entry in links, for as long as it
		// has any other entry (fwd included): links empty means unused.
		els, err := c.GetSetElements(setByName[setLinks])
		if isENOENT(err) {
			hs.tableReady = false
			return nil // gone already
		}
		if err != nil || len(els) > 0 {
			return err
		}
		err = delTableAtGen(raw, gen)
		if err == errGenChanged {
			continue
		}
		if err == nil {
			hs.tableReady = false
		}
		return err
	}
	return nil // busy host: leave the empty table; the next last Close or Sweep removes it
}

type uplinkInfo struct {
	name       string
	index      int
	forwarding bool
}

// inspectHost finds the uplink (or the default route's link), checks it is
// up with an IPv4 address, and, with checkOverlap, that cidr overlaps no
// route or address of the host (the local table lists the host's own
// addresses). Routes come from the host's route cache, so the cost does not
// grow with the number of links.
func inspectHost(hs *hostState, host *netns.Handle, hc *nl.Conn, uplink string, cidr netip.Prefix, checkOverlap bool) (uplinkInfo, error) {
	var linkMsg []byte
	if uplink != "" {
		msgs, err := hc.Query(nl.GetLinkByName(uplink))
		if err != nil {
			return uplinkInfo{}, fmt.Errorf("uplink %q: %w", uplink, err)
		}
		linkMsg = msgs[0].Data
	}
	hs.mu.Lock()
	if err := hs.routes.refresh(host, hc); err != nil {
		hs.mu.Unlock()
		return uplinkInfo{}, fmt.Errorf("host routes: %w", err)
	}
	var overlap error
	if checkOverlap {
		overlap = hs.routes.overlap(cidr)
	}
	defaultIdx := hs.routes.defaultLink()
	locals := maps.Clone(hs.routes.locals) // links with an IPv4 address
	hs.mu.Unlock()
	if uplink == "" {
		if defaultIdx == 0 {
			return uplinkInfo{}, fmt.Errorf("no uplink given and the host has no IPv4 default route: %w", nl.Wrap(unix.ENODEV))
		}
		msgs, err := hc.Query(nl.GetLinkByIndex(defaultIdx))
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
	up.forwarding, _ = nl.Forwarding(linkMsg)
	switch {
	case link.Flags&unix.IFF_UP == 0:
		return up, fmt.Errorf("uplink %q is down: bring it up first", up.name)
	case locals[up.index] == 0:
		return up, fmt.Errorf("uplink %q has no IPv4 address: masquerading needs one", up.name)
	}
	return up, overlap
}

// processStart returns a process's start time in clock ticks since boot
// (field 22 of /proc/PID/stat): with the pid it tells a process from a
// later one that reuses the pid.
func processStart(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	// The command name (field 2) may hold spaces and parentheses: count
	// fields after its closing parenthesis.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0
	}
	var v uint64
	fmt.Sscan(f[19], &v)
	return v
}
