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
	"strings"
	"sync"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/dns"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/netns"
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
	// sharedHost: host is the host state's (see hostState.host), not the
	// link's own, and goes with the host state's last link.
	sharedHost bool
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
	// DOCKER-USER chain, "" if it has none (see the firewall package).
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

// addHost and addNS are the requests that add the host end's address and
// the namespace's. An IPv4 point-to-point address
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
	nsRef, err := nl.DupHandle(ns)
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
	if !c.Persistent {
		// The host state's handle from now on: one descriptor for all
		// its links (see hostState.host).
		l.host, l.sharedHost = l.hs.handle(), true
		host.Close()
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
