package nat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/addrplan"
	"github.com/nsnet/nsnet/nat/internal/dns"
	"github.com/nsnet/nsnet/nat/internal/naterr"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/nat/internal/table"
	"github.com/nsnet/nsnet/nat/internal/uplinks"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// owned is what a Link or Rules holds in the host, recorded when it was
// made: set entries, a share of the uplink's forwarding, a reserved
// prefix; close gives it all back.
type owned struct {
	host           *netns.Handle // our own handle to the host namespace
	hostKey        uint64
	nsKey          uint64            // connected namespace, 0 for Rules
	nsRef          *netns.Handle     // holds the namespace open, so that its inode (nsKey) is not reused meanwhile
	nsName         string            // the connected namespace for errors, as its handle says ("NAME net:[INODE]")
	sharedHost     bool              // host is the host state's (see hostState.host), not the link's own
	hostIdx, nsIdx int               // the pair's ends (hostIdx: the caller's link for Rules, never deleted)
	vethName       string            // the host end's name (error messages, DOCKER-USER rules)
	nets           addrplan.Networks // the link's networks (Links only)
	persistent     bool              // the persistent owner's (Config.Persistent): Close removes it as Remove does
	portsReserved  bool              // Config.PortsReserved: no probe of the host's sockets
	dns            *dns.Setup        // the namespace's resolv.conf and relay (nil: none)
	etcDir         string            // the namespace's netns.EtcDir
	dockerUser     string            // the comment of its DOCKER-USER rules ("": no Config.DockerUser)
	dockerFams     []byte            // the families whose DOCKER-USER had its rules at Connect
	linkFwdOff     []byte            // the families whose forwarding AddRules turned on on the caller's link (Rules only)
	ent            nftset.Entries
	hs             *hostState

	mu     sync.Mutex
	closed bool
	err    error
}

// failHook, when set by tests, is called before each step of Connect and
// Close; an error it returns fails that step.
var failHook func(step string) error

func init() { table.Hook, uplinks.Hook, dns.Hook = hook, hook, hook }

func hook(step string) error {
	if failHook != nil {
		return failHook(step)
	}
	return nil
}

func (cfg Config) validate(ns *netns.Handle, uplink string, cidr netip.Prefix) (addrplan.Networks, error) {
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
	nets, err := addrplan.Ask{V4: cidr, V6: cfg.Prefix6, Host: cfg.HostAddr, NS: cfg.NSAddr, Host6: cfg.HostAddr6, NS6: cfg.NSAddr6,
		Routed: cfg.RoutedIPv4, Routed6: cfg.RoutedIPv6}.Networks()
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
		if err := p.Validate(); err != nil {
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
	if err := errors.Join(cfg.ToNS.Validate(), cfg.FromNS.Validate()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if m := cfg.NSMAC; m != nil && (len(m) != 6 || m[0]&1 != 0 || bytes.Equal(m, make([]byte, 6))) {
		return nil, invalid("NSMAC %v: not a unicast Ethernet address", m)
	}
	return nets, nets.CheckMTU(cfg.MTU)
}

// validateDNS checks the DNS settings.
func (cfg Config) validateDNS() error {
	switch cfg.DNS {
	case DNSAuto, DNSRelay, DNSNone:
		return nil
	case DNSServers:
		return dns.CheckServers(cfg.DNSServers)
	}
	return invalid("DNS mode %v", cfg.DNS)
}

// mode is m as the dns package names it.
func (m DNSMode) mode() dns.Mode {
	return map[DNSMode]dns.Mode{DNSAuto: dns.Auto, DNSServers: dns.Servers, DNSRelay: dns.Relay, DNSNone: dns.None}[m]
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
	var l *Link
	var err error
	if c.Prefix6 == (netip.Prefix{}) && (cidr == (netip.Prefix{}) || c.AutoPrefix6 || cidr == AutoIPv6) {
		l, err = c.autoConnect(ctx, ns, uplink, cidr)
	} else {
		l, err = c.connect(ctx, ns, uplink, cidr)
	}
	if err == nil && (!c.ToNS.IsZero() || !c.FromNS.IsZero()) {
		if err = l.sysImpair(c.ToNS, c.FromNS); err != nil {
			l.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("nat: connect %s: %w", addrplan.Describe(cidr, c.Prefix6), err)
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
		if n.Fam() == unix.NFPROTO_IPV4 {
			l.Prefix, l.HostAddr, l.NSAddr = n.Prefix, n.HostAddr(), n.NSAddr()
		} else {
			l.Prefix6, l.HostAddr6, l.NSAddr6 = n.Prefix, n.HostAddr(), n.NSAddr()
		}
	}
	l.nets = nets
	l.host, l.nsRef = host, nsRef
	l.hostKey, l.nsKey, l.nsName = host.ID(), nsRef.ID(), ns.String()
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
		if attempt > 0 || !errors.Is(err, naterr.ErrDeadHolder) {
			break
		}
		// The prefix is held by what a dead process left: sweep it.
		if _, serr := sweepHost(ctx, host); serr != nil {
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
	l.portsReserved = c.PortsReserved
	if c.Persistent {
		// Not this process's: it keeps nothing of it (see Config.Persistent).
		l.persistent = true
		addrplan.Release(l.hostKey, l.nsKey, l.nets.Prefixes())
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

// hostEndConf are the settings of an IPv6 host end that go in one request
// while it is down (see nl.PrepareLink): no link-local address of the
// kernel's, IPv4 forwarding (with an IPv4 network: nothing reaches the
// link before it is up, after the rules are in place), route_localnet for
// 127.0.0.1 ports, the owner mark.
func hostEndConf(v4, localnet bool, mark string) nl.LinkConf {
	return nl.LinkConf{NoLinkLocal: true, Forwarding: v4, RouteLocalnet: localnet, Alias: mark}
}
