package nat

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/dns"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/netns"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// owned is what a Link or Rules holds in the host, recorded when it was
// made: set entries, a share of the uplink's forwarding, a reserved
// prefix; close gives it all back.
type owned struct {
	host    *netns.Handle // our own handle to the host namespace
	hostKey uint64
	nsKey   uint64 // connected namespace, 0 for Rules
	// nsRef holds the connected namespace open while the Link lives: its
	// inode, nsKey, cannot then be reused by a new namespace that the
	// registry would mistake for this one.
	nsRef *netns.Handle
	// hostIdx and nsIdx are the interface indexes of the pair's ends
	// (hostIdx is the caller's link for Rules, never deleted).
	hostIdx, nsIdx int
	vethName       string   // for error messages only
	nets           networks // the link's networks (Links only)
	// persistent: the link is the persistent owner's (Config.Persistent):
	// Close removes it as Remove does.
	persistent bool
	dns        *dns.Setup // the namespace's resolv.conf and relay (nil: none)
	etcDir     string     // the namespace's netns.EtcDir
	// dockerUser is the comment of the link's rules in Docker's
	// DOCKER-USER chain, "" if it has none (see dockeruser_linux.go).
	dockerUser string
	dockerFams []byte // the families whose DOCKER-USER has its rules
	// linkFwdOff: AddRules turned the caller's link's forwarding on, and
	// Rules.Close turns it back off (Rules only).
	linkFwdOff bool
	ent        nftset.Entries
	hs         *hostState

	mu     sync.Mutex
	closed bool
	err    error
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

// describe names the prefixes asked for, for errors.
func (c Config) describe(cidr netip.Prefix) string {
	switch {
	case c.Prefix6 == (netip.Prefix{}):
		return cidr.String()
	case cidr == (netip.Prefix{}):
		return c.Prefix6.String()
	}
	return cidr.String() + ", " + c.Prefix6.String()
}

// network is one family's network of a link: its prefix, the two
// addresses, and whether it leaves routed (not masqueraded).
type network struct {
	prefix   netip.Prefix
	host, ns netip.Addr
	routed   bool
}

func (n network) fam() byte { return nftset.FamilyOf(n.prefix.Addr()) }

// hostAddr and nsAddr are the two addresses with the prefix's length.
func (n network) hostAddr() netip.Prefix { return netip.PrefixFrom(n.host, n.prefix.Bits()) }
func (n network) nsAddr() netip.Prefix   { return netip.PrefixFrom(n.ns, n.prefix.Bits()) }

// pointToPoint tells a network of one address (/32, /128): the
// namespace's, with the host end's (its gateway, which many links may
// share) outside it, each the other's peer, as CNI's ptp plugin does.
func (n network) pointToPoint() bool { return n.prefix.Bits() == n.prefix.Addr().BitLen() }

// addHost, delHost and addNS are the requests that add and delete the host
// end's address and add the namespace's. An IPv4 point-to-point address
// is one with a peer (its route to the peer comes with it); an IPv6 one
// is the address and a route to the peer, since IPv6 adds a peer's route
// only once the link is ready, after its carrier, and the namespace's
// default route needs it at once.
func (n network) addHost(index int) []nl.Request { return n.add(index, n.host, n.ns) }
func (n network) addNS(index int) []nl.Request   { return n.add(index, n.ns, n.host) }

func (n network) add(index int, local, peer netip.Addr) []nl.Request {
	switch {
	case !n.pointToPoint():
		return []nl.Request{nl.NewAddr(index, netip.PrefixFrom(local, n.prefix.Bits()), addrFlags(n), false)}
	case local.Is4():
		return []nl.Request{nl.NewPeerAddr(index, local, peer, 0)}
	}
	return []nl.Request{nl.NewAddr(index, netip.PrefixFrom(local, 128), addrFlags(n), false), nl.NewRoute(peerRoute(index, peer), false)}
}

func (n network) delHost(index int) []nl.Request {
	switch {
	case !n.pointToPoint():
		return []nl.Request{nl.DelAddr(index, n.hostAddr())}
	case n.host.Is4():
		return []nl.Request{nl.DelPeerAddr(index, n.host, n.ns)}
	}
	return []nl.Request{nl.DelAddr(index, netip.PrefixFrom(n.host, 128)), nl.DelRoute(peerRoute(index, n.ns))}
}

// peerRoute is the route to a point-to-point peer through link index.
func peerRoute(index int, peer netip.Addr) nl.RouteSpec {
	return nl.RouteSpec{Dst: netip.PrefixFrom(peer, peer.BitLen()), LinkIndex: index, Protocol: unix.RTPROT_BOOT,
		Scope: unix.RT_SCOPE_LINK, Type: unix.RTN_UNICAST}
}

// networks are a link's networks, IPv4 first.
type networks []network

func (ns networks) prefixes() []netip.Prefix {
	var ps []netip.Prefix
	for _, n := range ns {
		ps = append(ps, n.prefix)
	}
	return ps
}

func (ns networks) families() []byte {
	var fams []byte
	for _, n := range ns {
		fams = append(fams, n.fam())
	}
	return fams
}

func (ns networks) routed() []byte {
	var fams []byte
	for _, n := range ns {
		if n.routed {
			fams = append(fams, n.fam())
		}
	}
	return fams
}

// of returns the network of family fam, if the link has one.
func (ns networks) of(fam byte) (network, bool) {
	for _, n := range ns {
		if n.fam() == fam {
			return n, true
		}
	}
	return network{}, false
}

func (cfg Config) validate(ns *netns.Handle, uplink string, cidr netip.Prefix) (networks, error) {
	switch {
	case ns == nil:
		return nil, invalid("namespace is nil (the host's own); give the namespace to connect")
	case ns.Fd() < 0:
		return nil, fmt.Errorf("namespace: %w", netns.ErrClosed)
	case cfg.HostNS != nil && cfg.HostNS.Fd() < 0:
		return nil, fmt.Errorf("host namespace: %w", netns.ErrClosed)
	case ns.Equal(cfg.HostNS):
		return nil, invalid("namespace %v is the host namespace itself", ns)
	}
	nets, err := cfg.networks(cidr)
	if err != nil {
		return nil, err
	}
	if uplink != "" {
		if err := nl.CheckIfName(uplink); err != nil {
			return nil, fmt.Errorf("uplink: %w", err)
		}
	}
	for _, n := range []string{cfg.HostVeth, cfg.NSVeth} {
		if n != "" {
			if err := nl.CheckIfName(n); err != nil {
				return nil, err
			}
		}
	}
	for _, p := range cfg.Ports {
		if err := p.validate(); err != nil {
			return nil, err
		}
	}
	switch {
	case cfg.Tag != "" && !cfg.Persistent:
		return nil, invalid("Tag is for persistent links (set Persistent)")
	case len(cfg.Tag) > 100 || strings.ContainsFunc(cfg.Tag, func(r rune) bool { return r < ' ' || r > '~' }):
		return nil, invalid("Tag %q: at most 100 printable ASCII characters", cfg.Tag)
	case cfg.Persistent && (cfg.DNS == DNSServers || cfg.DNS == DNSRelay):
		return nil, invalid("a persistent link gets no DNS of nsnet's (DNS %v): DNSAuto or DNSNone", cfg.DNS)
	case cfg.Persistent && cfg.DockerUser:
		return nil, invalid("a persistent link cannot have DOCKER-USER rules")
	}
	if err := cfg.validateDNS(); err != nil {
		return nil, err
	}
	if cfg.MTU != 0 && (cfg.MTU < 576 || cfg.MTU > 65535) {
		return nil, invalid("MTU %d outside 576..65535", cfg.MTU)
	}
	if _, ok := nets.of(unix.NFPROTO_IPV6); ok && cfg.MTU != 0 && cfg.MTU < 1280 {
		return nil, invalid("MTU %d is below IPv6's minimum of 1280", cfg.MTU)
	}
	return nets, nil
}

// validateDNS checks the DNS settings.
func (cfg Config) validateDNS() error {
	switch cfg.DNS {
	case DNSAuto, DNSRelay, DNSNone:
	case DNSServers:
		if len(cfg.DNSServers) == 0 {
			return invalid("DNS: DNSServers without Config.DNSServers")
		}
		for _, s := range cfg.DNSServers {
			if !s.IsValid() || s.IsUnspecified() || s.IsMulticast() {
				return invalid("DNS server %v", s)
			}
		}
	default:
		return invalid("DNS mode %v", cfg.DNS)
	}
	return nil
}

// mode is m as the dns package names it.
func (m DNSMode) mode() dns.Mode {
	return map[DNSMode]dns.Mode{DNSAuto: dns.Auto, DNSServers: dns.Servers, DNSRelay: dns.Relay, DNSNone: dns.None}[m]
}

// networks checks the link's prefixes and addresses: cidr (either family,
// or zero when Prefix6 is given) and Prefix6.
func (cfg Config) networks(cidr netip.Prefix) (networks, error) {
	v4, v6 := cidr, cfg.Prefix6
	if cidr.IsValid() && cidr.Addr().Is6() && !cidr.Addr().Is4In6() {
		if v6 != (netip.Prefix{}) {
			return nil, invalid("prefix %v is IPv6 and Prefix6 is %v: give the IPv4 prefix to Connect and the IPv6 one as Prefix6", cidr, v6)
		}
		v4, v6 = netip.Prefix{}, cidr
	}
	var nets networks
	switch {
	case v4 == (netip.Prefix{}) && v6 == (netip.Prefix{}):
		return nil, invalid("no prefix: give an IPv4 or IPv6 prefix")
	case v4 != (netip.Prefix{}):
		if err := validPrefix(v4); err != nil {
			return nil, err
		}
		host, ns, err := addresses(v4, cfg.HostAddr, cfg.NSAddr)
		if err != nil {
			return nil, err
		}
		nets = append(nets, network{prefix: v4, host: host, ns: ns, routed: cfg.RoutedIPv4})
	case cfg.HostAddr.IsValid() || cfg.NSAddr.IsValid():
		return nil, invalid("HostAddr and NSAddr are IPv4 addresses, and the link has no IPv4 prefix (HostAddr6 and NSAddr6 are IPv6's)")
	}
	if v6 != (netip.Prefix{}) {
		if err := validPrefix6(v6); err != nil {
			return nil, err
		}
		host, ns, err := addresses(v6, cfg.HostAddr6, cfg.NSAddr6)
		if err != nil {
			return nil, err
		}
		nets = append(nets, network{prefix: v6, host: host, ns: ns, routed: cfg.RoutedIPv6})
	} else if cfg.HostAddr6.IsValid() || cfg.NSAddr6.IsValid() {
		return nil, invalid("HostAddr6 and NSAddr6 are given, and the link has no IPv6 prefix (set Prefix6)")
	}
	return nets, nil
}

// addresses returns the host and namespace addresses for cidr: those
// given, or by default the first two host addresses. An IPv4 network's
// first and last addresses (network, broadcast) are no host addresses,
// nor is an IPv6 network's first (the subnet-router anycast address).
func addresses(cidr netip.Prefix, hostAddr, nsAddr netip.Addr) (netip.Addr, netip.Addr, error) {
	v4 := cidr.Addr().Is4()
	if cidr.Bits() == cidr.Addr().BitLen() {
		// Point-to-point: the namespace's address is the prefix, the host
		// end's its gateway, outside it (see network.pointToPoint).
		switch {
		case !hostAddr.IsValid():
			return hostAddr, nsAddr, invalid("prefix %v is a single address: give the host end's address (the namespace's gateway) as HostAddr%s", cidr, map[bool]string{true: "", false: "6"}[v4])
		case hostAddr.Is4() != v4 || hostAddr.Zone() != "" || hostAddr == cidr.Addr() || hostAddr.IsUnspecified() ||
			hostAddr.IsLoopback() || hostAddr.IsMulticast() || hostAddr.IsLinkLocalUnicast():
			return hostAddr, nsAddr, invalid("host address %v cannot be the gateway of %v", hostAddr, cidr)
		case nsAddr.IsValid() && nsAddr != cidr.Addr():
			return hostAddr, nsAddr, invalid("namespace address %v is not %v", nsAddr, cidr.Addr())
		}
		return hostAddr, cidr.Addr(), nil
	}
	if !hostAddr.IsValid() {
		hostAddr = cidr.Addr().Next()
	}
	if !nsAddr.IsValid() {
		nsAddr = hostAddr.Next()
		if !cidr.Contains(nsAddr) || (v4 && nsAddr == lastAddr(cidr)) {
			nsAddr = cidr.Addr().Next()
		}
	}
	for _, a := range []netip.Addr{hostAddr, nsAddr} {
		if !cidr.Contains(a) || a == cidr.Addr() || (v4 && a == lastAddr(cidr)) {
			return hostAddr, nsAddr, invalid("address %v is not a host address of %v", a, cidr)
		}
	}
	if hostAddr == nsAddr {
		return hostAddr, nsAddr, invalid("host and namespace addresses are both %v", hostAddr)
	}
	return hostAddr, nsAddr, nil
}

// validPrefix checks that cidr can be a namespace's IPv4 network.
func validPrefix(cidr netip.Prefix) error {
	switch {
	case !cidr.IsValid() || !cidr.Addr().Is4() || cidr.Addr().Zone() != "":
		return invalid("prefix %v is not an IPv4 prefix", cidr)
	case cidr.Masked() != cidr:
		return invalid("prefix %v has host bits set (did you mean %v?)", cidr, cidr.Masked())
	case cidr.Bits() == 31:
		return invalid("prefix %v has no room for two hosts (at most /30, or /32 with HostAddr as its gateway)", cidr)
	case cidr.Bits() < nftset.MinBits4:
		return invalid("prefix %v is larger than /%d", cidr, nftset.MinBits4)
	case cidr.Addr().IsLoopback() || cidr.Addr().IsMulticast() || cidr.Addr().IsLinkLocalUnicast() ||
		cidr.Addr().IsUnspecified() || cidr.Overlaps(netip.MustParsePrefix("240.0.0.0/4")):
		return invalid("prefix %v is loopback, multicast, link-local or reserved", cidr)
	}
	return nil
}

// validPrefix6 checks that cidr can be a namespace's IPv6 network.
func validPrefix6(cidr netip.Prefix) error {
	a := cidr.Addr()
	switch {
	case !cidr.IsValid() || !a.Is6() || a.Is4In6() || a.Zone() != "":
		return invalid("prefix %v is not an IPv6 prefix", cidr)
	case cidr.Masked() != cidr:
		return invalid("prefix %v has host bits set (did you mean %v?)", cidr, cidr.Masked())
	case cidr.Bits() > 126 && cidr.Bits() < 128:
		return invalid("prefix %v has no room for two hosts (at most /126, or /128 with HostAddr6 as its gateway)", cidr)
	case cidr.Bits() < nftset.MinBits6:
		return invalid("prefix %v is larger than /%d", cidr, nftset.MinBits6)
	case a.IsMulticast() || a.IsLinkLocalUnicast() || cidr.Overlaps(netip.MustParsePrefix("::/8")) ||
		cidr.Overlaps(netip.MustParsePrefix("fec0::/10")):
		return invalid("prefix %v is loopback, multicast, link-local, IPv4-mapped or reserved", cidr)
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

// entryMark is the comment of this process's set entries for the link
// whose host end is hostVeth.
func entryMark(hostVeth string) string {
	m := owner.Self
	m.Link = hostVeth
	return m.String()
}

// randomVethName is a host end name of the library's own: "nsn-" and 11
// random characters.
func randomVethName() string { return "nsn-" + owner.RandomString(11) }

// sysConnect is Connect on Linux.
func (c Config) sysConnect(ctx context.Context, ns *netns.Handle, uplink string, cidr netip.Prefix) (*Link, error) {
	l, err := c.connect(ctx, ns, uplink, cidr)
	if err != nil {
		return nil, fmt.Errorf("nat: connect %s: %w", c.describe(cidr), err)
	}
	return l, nil
}

func (c Config) connect(ctx context.Context, ns *netns.Handle, uplink string, cidr netip.Prefix) (*Link, error) {
	nets, err := c.validate(ns, uplink, cidr)
	if err != nil {
		return nil, err
	}
	// The host namespace is resolved once, here on the caller's thread.
	host, err := resolveHost(c.HostNS)
	if err != nil {
		return nil, fmt.Errorf("host namespace: %w", err)
	}
	nsRef, err := dupHandle(ns)
	if err != nil {
		host.Close()
		return nil, fmt.Errorf("namespace: %w", err)
	}
	l := &Link{HostVeth: c.HostVeth, NSVeth: c.NSVeth, owned: &owned{}}
	for _, n := range nets {
		if n.fam() == unix.NFPROTO_IPV4 {
			l.Prefix, l.HostAddr, l.NSAddr = n.prefix, n.hostAddr(), n.nsAddr()
		} else {
			l.Prefix6, l.HostAddr6, l.NSAddr6 = n.prefix, n.hostAddr(), n.nsAddr()
		}
	}
	l.nets = nets
	l.host, l.nsRef = host, nsRef
	l.hostKey, l.nsKey = host.ID(), nsRef.ID()
	l.etcDir = netns.EtcDir(ns) // by the caller's handle, which has its name
	if l.HostVeth == "" {
		l.HostVeth = randomVethName()
	}
	if l.NSVeth == "" {
		l.NSVeth = "eth0"
	}
	l.vethName = l.HostVeth
	for attempt := 0; ; attempt++ {
		err = c.steps(ctx, l, uplink)
		if attempt > 0 || !errors.Is(err, errDeadHolder) {
			break
		}
		// The prefix is held by what a dead process left: sweep it.
		if _, serr := sweep(ctx, host); serr != nil {
			err = errors.Join(err, serr)
			break
		}
	}
	if err != nil {
		host.Close()
		nsRef.Close()
		return nil, err
	}
	if c.Persistent {
		// Not this process's: it keeps nothing of it (see Config.Persistent).
		l.persistent = true
		release(l.hostKey, l.nsKey, l.nets.prefixes())
		socks, _ := l.hs.leave(host)
		socks.close()
		return l, nil
	}
	l.hs.addLive(l.owned)
	return l, nil
}

// undoStack holds the undo of each step done so far.
type undoStack []func()

func (u *undoStack) push(f func()) { *u = append(*u, f) }

// unwind undoes in reverse order.
func (u undoStack) unwind() {
	for i := len(u) - 1; i >= 0; i-- {
		u[i]()
	}
}

// steps makes the link, one step after another; a failing step unwinds
// the ones before it.
func (c Config) steps(ctx context.Context, l *Link, uplink string) (err error) {
	var undo undoStack
	var hc *nl.Conn
	defer func() {
		if err != nil {
			undo.unwind()
		}
		if hc != nil {
			l.hs.putConn(hc) // after the undo, which uses it
		}
	}()
	host := l.host
	step := func(name string, f func() error) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := hook(name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := f(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}

	_, v6 := l.nets.of(unix.NFPROTO_IPV6)
	_, v4 := l.nets.of(unix.NFPROTO_IPV4)
	plan, err := dns.Decide(c.DNS.mode(), c.DNSServers, v4)
	if err != nil {
		return err
	}
	if c.Persistent {
		plan = dns.Plan{} // nothing in this process outlives it
	}
	// The mark of the host end and of every entry.
	hostMark, entMark := owner.Self.String(), entryMark(l.HostVeth)
	if c.Persistent {
		hostMark = persistentEntryMark(l.HostVeth, c.Tag)
		entMark = hostMark
	}

	// In this process first: a clear error for its own overlaps.
	if err := reserve(l.hostKey, l.nsKey, l.nets.prefixes()); err != nil {
		return err
	}
	undo.push(func() { release(l.hostKey, l.nsKey, l.nets.prefixes()) })

	hs, err := enter(host, l.hostKey)
	if err != nil {
		return err
	}
	l.hs = hs
	undo.push(func() { hs.leaveNow(host) })

	if err := step("nftables table", func() error { return hs.ensureTable(host) }); err != nil {
		return err
	}
	var fw firewallView
	if !c.AllowForeignDrop || c.DockerUser {
		if fw, err = hs.firewall(host); err != nil {
			return err
		}
	}
	if !c.AllowForeignDrop {
		if err := fw.check(c.DockerUser, l.nets.families()); err != nil {
			return err
		}
	}
	if hc, err = hs.conn(host); err != nil {
		return err
	}
	var up uplinkInfo
	if err := hook("inspect host"); err != nil {
		return fmt.Errorf("inspect host: %w", err)
	}
	if up, err = inspectHost(hs, host, hc, uplink, l.nets, true); err != nil {
		return err
	}
	l.Uplink = up.name
	// Published ports go into the same transaction as the link's other
	// entries: one taken fails it all, before anything is added.
	var ports []nftset.PortMap
	if len(c.Ports) > 0 {
		if ports, err = expandPorts(host, hc, up.index, l.nets.families(), nil, c.Ports); err != nil {
			return err
		}
	}

	// The pair, its ends numbered by the library (see randomIndex), so
	// that every later step names them by index. The owner mark (ifalias,
	// which the kernel ignores on creation) goes in the same batch when
	// the name is the library's own random one, so not even a crash right
	// after leaves an unmarked pair; a name the caller chose may be a link
	// of theirs if the create fails, so its mark comes with the host link
	// step, by index.
	markedNow := c.HostVeth == ""
	localnet := slices.ContainsFunc(ports, nftset.PortMap.Loopback)
	err = step("veth", func() error {
		var err error
		for attempt := 0; ; attempt++ {
			l.hostIdx, l.nsIdx = randomIndex(), randomIndex()
			reqs := []nl.Request{nl.NewVeth(nl.Veth{Name: l.HostVeth, PeerName: l.NSVeth, PeerNSFd: l.nsRef.Fd(),
				MTU: c.MTU, Index: l.hostIdx, PeerIndex: l.nsIdx})}
			if markedNow {
				reqs = append(reqs, nl.SetAliasByName(l.HostVeth, hostMark))
				if v6 {
					// The mark with the IPv6 host end's other settings:
					// one request (see nl.PrepareLink).
					reqs[1] = nl.PrepareLinkByName(l.HostVeth, hostEndConf(v4, localnet, hostMark))
				}
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
			return fmt.Errorf("%s peer %s: %w", l.HostVeth, l.NSVeth, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Deleting the host end takes the peer, both addresses and the
	// namespace's route with it.
	unlink := func() { quiesce(host, hc, []int{l.hostIdx}, nil) }
	undo.push(unlink)

	l.ent = nftset.Entries{Link: l.hostIdx, Uplink: up.index, Prefixes: l.nets.prefixes(), Routed: l.nets.routed(),
		NSAddr: l.NSAddr.Addr(), NSAddr6: l.NSAddr6.Addr(), AllowSiblings: c.AllowSiblings, Ports: ports,
		Mark: entMark}
	if c.Persistent {
		if err := step("nftables", func() error { return hs.addPersistent(ctx, host, hc, l.ent) }); err != nil {
			return err
		}
		undo.push(func() {
			owner.WithHostLock(context.Background(), host, func() error {
				_, err := dropPersistentEntries(host, hc, l.HostVeth)
				return err
			})
		})
	} else {
		if err := step("nftables", func() error { return hs.addLink(ctx, host, hc, l.ent) }); err != nil {
			return err
		}
		undo.push(func() { hs.removeLink(host, hc, l.ent) })
	}
	if len(ports) > 0 {
		hs.withConntrack(host, func(c *conntrack.Conn) error { forgetUntranslated(c, ports); return nil })
	}

	var dockerFams []byte // the link's families whose Docker table has DOCKER-USER
	for _, fam := range l.nets.families() {
		if c.DockerUser && fw.dockerUser[fam] {
			dockerFams = append(dockerFams, fam)
		}
	}
	if len(dockerFams) > 0 {
		comment := dockerUserComment(l.HostVeth, l.hostIdx)
		if err := step("docker-user", func() error { return hs.acceptInDockerUser(host, dockerFams, l.HostVeth, comment) }); err != nil {
			return err
		}
		l.dockerUser, l.dockerFams = comment, dockerFams
		undo.push(func() { hs.dropDockerUser(host, map[string]int{comment: 2 * len(dockerFams)}) })
	}

	var loIndex int
	var nc *nl.Conn
	defer func() {
		if nc != nil {
			nc.Close()
		}
	}()
	nsStep := func() error {
		var err error
		if nc, err = nl.Dial(l.nsRef); err != nil {
			return err
		}
		// lo is looked up, not brought up yet (see below); the peer comes
		// up with its addresses and default routes (IPv6's without
		// duplicate address detection: usable at once).
		reqs := []nl.Request{nl.GetLinkByName("lo"), nl.SetLinkUp(l.nsIdx, "", true)}
		for _, n := range l.nets {
			reqs = append(reqs, n.addNS(l.nsIdx)...)
		}
		for _, n := range l.nets {
			reqs = append(reqs, nl.NewRoute(nl.RouteSpec{Dst: netip.PrefixFrom(unspecified(n.fam()), 0), Gateway: n.host,
				Protocol: unix.RTPROT_BOOT, Type: unix.RTN_UNICAST}, false))
		}
		replies, errs, err := nc.Do(reqs...)
		if err == nil {
			err = errors.Join(errs...)
		}
		if err != nil {
			return err
		}
		lo, err := nl.DecodeLink(replies[0][0].Data)
		if err != nil {
			return err
		}
		if lo.Flags&unix.IFF_UP == 0 {
			loIndex = int(lo.Index)
		}
		return nil
	}

	hostStep := func() error {
		// Forwarding last: the link's packets are forwarded only once
		// everything that filters and masquerades them is in place (IPv6's
		// while the link is still down: nothing passes before it is up).
		if !v6 {
			disableIPv6(host, l.HostVeth)
		} else if !forwardsAll(host, unix.NFPROTO_IPV6) {
			if err := setForceForwarding(host, l.HostVeth, true); err != nil {
				return err
			}
		}
		var reqs []nl.Request
		if v6 {
			// IPv6 on: the settings in one request while the link is
			// down (see nl.PrepareLink), made with the pair for a name of
			// the library's.
			if !markedNow {
				reqs = append(reqs, nl.PrepareLink(l.hostIdx, hostEndConf(v4, localnet, hostMark)))
			}
			reqs = append(reqs, nl.SetLinkUp(l.hostIdx, "", true))
			for _, n := range l.nets {
				reqs = append(reqs, n.addHost(l.hostIdx)...)
			}
			reqs = append(reqs, nl.NewAddr(l.hostIdx, hostLinkLocal(l.hostIdx), unix.IFA_F_NODAD|unix.IFA_F_NOPREFIXROUTE, false))
		} else {
			reqs = append(append(reqs, nl.NoLinkLocal(l.hostIdx), nl.SetLinkUp(l.hostIdx, "", true)), l.nets[0].addHost(l.hostIdx)...)
			if !markedNow {
				reqs = append(reqs, nl.SetAlias(l.hostIdx, hostMark))
			}
			if localnet {
				reqs = append(reqs, nl.SetRouteLocalnet(l.hostIdx, true))
			}
			reqs = append(reqs, nl.SetForwarding(l.hostIdx, true))
		}
		_, errs, err := hc.Do(reqs...)
		if err == nil {
			if !v6 && errors.Is(errs[0], unix.EAFNOSUPPORT) {
				errs[0] = nil // no IPv6 on the link: nothing to turn off
			}
			err = errors.Join(errs...)
		}
		return err
	}

	// The namespace's end comes up first, so that the host end is ready
	// (has a carrier) as it comes up; with IPv6 the other way round: a
	// host end that comes up without a carrier waits for the peer before
	// IPv6 configures it, once, where coming up ready and then seeing the
	// carrier change makes the kernel walk every IPv6 route of the host
	// twice (see nl.PrepareLink).
	order := []string{"namespace", "host link"}
	if v6 {
		order = []string{"host link", "namespace"}
	}
	for _, name := range order {
		f := nsStep
		if name == "host link" {
			f = hostStep
		}
		if err := step(name, f); err != nil {
			return err
		}
	}
	// From here on the link forwards: a later failure deletes the pair
	// first, before its entries go (see quiesce).
	undo.push(unlink)

	if plan.Writes() {
		m := owner.Self
		m.Host, m.Link = l.hostKey, l.HostVeth
		mark := m.String()
		n := l.nets[0] // the relay listens on IPv4's host address, or IPv6's for an IPv6-only link
		err := step("dns", func() (err error) {
			l.dns, err = dns.Start(plan, host, l.etcDir, n.host, n.prefix, mark)
			return err
		})
		if err != nil {
			return err
		}
		undo.push(func() { l.dns.Stop() })
	}

	// lo comes up only once everything else worked: bringing a link up
	// cannot be undone exactly (the kernel attaches a qdisc that stays
	// after it goes down again).
	if loIndex != 0 {
		err := step("namespace lo", func() error { return nc.Exec(nl.SetLinkUp(loIndex, "", true)) })
		if err != nil {
			return err
		}
	}
	return nil
}

// addrFlags are the flags of a link's new address: IPv6 addresses skip
// duplicate address detection (the pair is the link's own, and the
// address usable at once).
func addrFlags(n network) uint32 {
	if n.fam() == unix.NFPROTO_IPV6 {
		return unix.IFA_F_NODAD
	}
	return 0
}

// hostEndConf are the settings of an IPv6 host end that go in one request
// while it is down (see nl.PrepareLink): no link-local address of the
// kernel's, IPv4 forwarding (with an IPv4 network: nothing reaches the
// link before it is up, after the rules are in place), route_localnet for
// 127.0.0.1 ports, the owner mark.
func hostEndConf(v4, localnet bool, mark string) nl.LinkConf {
	return nl.LinkConf{NoLinkLocal: true, Forwarding: v4, RouteLocalnet: localnet, Alias: mark}
}

// hostLinkLocal is the host end's IPv6 link-local address, fe80::INDEX:
// the host solicits a neighbour from its link-local address, so without
// one it could not reach a namespace that had not spoken first. It is
// added without the fe80::/64 route (which every link would share: one
// list in the kernel, longer with every link) and unique to the link, so
// that its local route is too.
func hostLinkLocal(index int) netip.Prefix {
	b := [16]byte{0: 0xfe, 1: 0x80}
	binary.BigEndian.PutUint32(b[12:], uint32(index))
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// unspecified is the family's unspecified address (the default route's).
func unspecified(fam byte) netip.Addr {
	if fam == unix.NFPROTO_IPV6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// disableIPv6 turns IPv6 off on the host end of a new IPv4-only pair while
// it is still down. The kernel keeps the IPv6
// routes of every link (fe80::/64, ff00::/8) in one list per prefix, so
// with IPv6 on, each Connect cost more the more links the host had (see
// README, Benchmarks). disable_ipv6 has no netlink attribute, so it is
// written under /proc/sys, which follows the writing thread's namespace.
// Where /proc/sys is read-only (as in many containers) the write fails and
// is let go: nl.NoLinkLocal, sent with the link's up, still keeps the
// link-local address and its route away.
func disableIPv6(host *netns.Handle, link string) {
	host.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/"+link+"/disable_ipv6", []byte("1\n"), 0)
	})
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
