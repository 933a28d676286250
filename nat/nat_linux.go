package nat

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/google/nftables"
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

// String describes the link in one line, as
// "10.0.0.0/24: nsn-k3f9a0b2c7d (10.0.0.1) <-> eth0 (10.0.0.2) via up0".
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

// invalid is an ErrInvalidConfig saying what is wrong.
func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
}

func (cfg Config) validate(ns *netns.Handle, uplink string, cidr netip.Prefix) (hostAddr, nsAddr netip.Addr, err error) {
	switch {
	case ns == nil:
		return hostAddr, nsAddr, invalid("namespace is nil (the host's own); give the namespace to connect")
	case ns.Fd() < 0:
		return hostAddr, nsAddr, fmt.Errorf("namespace: %w", netns.ErrClosed)
	case cfg.HostNS != nil && cfg.HostNS.Fd() < 0:
		return hostAddr, nsAddr, fmt.Errorf("host namespace: %w", netns.ErrClosed)
	case ns.Equal(cfg.HostNS):
		return hostAddr, nsAddr, invalid("namespace %v is the host namespace itself", ns)
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
		return hostAddr, nsAddr, invalid("MTU %d outside 576..65535", cfg.MTU)
	}
	return cfg.addresses(cidr)
}

// addresses returns the host and namespace addresses for cidr: those of
// cfg, or by default the first two host addresses.
func (cfg Config) addresses(cidr netip.Prefix) (hostAddr, nsAddr netip.Addr, err error) {
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
			return hostAddr, nsAddr, invalid("address %v is not a host address of %v", a, cidr)
		}
	}
	if hostAddr == nsAddr {
		return hostAddr, nsAddr, invalid("host and namespace addresses are both %v", hostAddr)
	}
	return hostAddr, nsAddr, nil
}

// validPrefix checks that cidr can be a namespace's network.
func validPrefix(cidr netip.Prefix) error {
	switch {
	case !cidr.IsValid() || !cidr.Addr().Is4() || cidr.Addr().Zone() != "":
		return invalid("prefix %v is not an IPv4 prefix", cidr)
	case cidr.Masked() != cidr:
		return invalid("prefix %v has host bits set (did you mean %v?)", cidr, cidr.Masked())
	case cidr.Bits() > 30:
		return invalid("prefix %v has no room for two hosts (at most /30)", cidr)
	case cidr.Bits() < 8:
		return invalid("prefix %v is larger than /8", cidr)
	case cidr.Addr().IsLoopback() || cidr.Addr().IsMulticast() || cidr.Addr().IsLinkLocalUnicast() ||
		cidr.Addr().IsUnspecified() || cidr.Overlaps(netip.MustParsePrefix("240.0.0.0/4")):
		return invalid("prefix %v is loopback, multicast, link-local or reserved", cidr)
	}
	return nil
}

// lastAddr is the last address of p (its broadcast address).
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
//     host end; the host end has IPv6 off (the namespace's end keeps it),
//     which keeps Connect's cost flat however many links the host has;
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
			leave(hs, c.HostNS)
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
		leave(hs, c.HostNS)
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
		leave(hs, l.host)
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
				MTU: c.MTU, Index: l.hostIdx, PeerIndex: l.nsIdx})}
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
		// Before the namespace lane takes the kernel's rtnl lock, which
		// makes this write retry in a loop.
		disableIPv6(c.HostNS, l.HostVeth)
		vethDone <- true
		if err := hook("host address"); err != nil {
			return fmt.Errorf("host address: %w", err)
		}
		// The host end comes up here, not when created, with no IPv6 (see
		// disableIPv6).
		reqs := []nl.Request{nl.NoLinkLocal(l.hostIdx), nl.SetLinkUp(l.hostIdx, "", true),
			nl.NewAddr(l.hostIdx, l.HostAddr, 0, false), nl.SetForwarding(l.hostIdx, true)}
		if !markedNow {
			reqs = append(reqs, nl.SetAlias(l.hostIdx, ownerMark))
		}
		_, errs, err := hc.Do(reqs...)
		if err == nil {
			if errors.Is(errs[0], unix.EAFNOSUPPORT) {
				errs[0] = nil // no IPv6 on the link: nothing to turn off
			}
			err = errors.Join(errs...)
		}
		if err != nil {
			return fmt.Errorf("host link up, address and forwarding: %w", err)
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

// disableIPv6 turns IPv6 off on the host end of a new pair while it is
// still down. nsnet connects IPv4 only, and the kernel keeps the IPv6
// routes of every link (fe80::/64, ff00::/8) in one list per prefix, so
// with IPv6 on, each Connect cost more the more links the host had: the
// last 50 of 1,000 Connects took 1.4-1.9x as long as the first 50, against
// 1.0-1.3x with IPv6 off (4 runs each, bench -scale style). disable_ipv6
// has no netlink attribute, so it is written under /proc/sys, which follows
// the writing thread's namespace. Where /proc/sys is read-only (as in many
// containers) the write fails and is let go: nl.NoLinkLocal, sent with the
// link's up, still keeps the link-local address and its route away.
func disableIPv6(host *netns.Handle, link string) {
	host.Do(func() error { // a nil host: right here, no thread hop
		return os.WriteFile("/proc/sys/net/ipv6/conf/"+link+"/disable_ipv6", []byte("1\n"), 0)
	})
}

// leave is hs.leave for a failed Connect, with nothing left to wait for.
func leave(hs *hostState, host *netns.Handle) {
	socks, _ := hs.leave(host)
	socks.close()
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
