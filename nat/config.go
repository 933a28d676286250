package nat

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/nsnet/nsnet/nat/internal/naterr"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/qdisc"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
)

// ErrInvalidConfig is matched by the error for input Connect refuses before
// touching the kernel: nil or host namespace, unusable prefix or
// addresses, bad names.
var ErrInvalidConfig = naterr.ErrInvalidConfig

// ErrOverlap is matched by the error when the prefix overlaps an address or
// route of the host, or the prefix of another live Link or Rules of any
// process; the error names the holder ("link nsn-… of live pid N").
var ErrOverlap = naterr.ErrOverlap

// ErrPoolExhausted is matched by Connect's error when no prefix of the pool
// (see Config.Pool) is free; the error names the pool.
var ErrPoolExhausted = errors.New("no free prefix in the pool")

// DefaultPool is where Connect takes a link's IPv4 prefix when it is given
// none (Config.Pool's default): 10.200.0.0/13, 2,048 /24s. It keeps clear of the ranges hosts
// commonly have already: Docker's 172.17.0.0/16 and its address pools
// (172.16.0.0/12, 192.168.0.0/16), podman's 10.88.0.0/16, Kubernetes'
// service range 10.96.0.0/12 and usual pod ranges (10.244.0.0/16,
// 10.42.0.0/15), CGNAT and Tailscale's 100.64.0.0/10, home and office
// LANs' 192.168.0.0/16, and the low 10.x networks many sites number from.
// A prefix that overlaps a route or address of the host anyway is skipped.
var DefaultPool = netip.MustParsePrefix("10.200.0.0/13")

// AutoIPv6, as Connect's cidr, asks for an IPv6-only link on a free /64 of
// the host namespace's unique local /48 (see Config.AutoPrefix6).
var AutoIPv6 = netip.PrefixFrom(netip.IPv6Unspecified(), 0)

// ErrForeignTable is matched by the error when the host has an nftables
// table called nsnet (family inet) that nsnet did not make: nsnet never
// changes or deletes it.
var ErrForeignTable = nftset.ErrForeignTable

// Config holds everything Connect can be told. The zero value is the
// tutorial's set-up; Connect(ns, uplink, cidr) is Config{}.Connect.
type Config struct {
	// HostNS is the namespace holding the uplink and the host end of the
	// veth pair, where the nftables rules go. nil: the caller's current
	// namespace. Keep it open until the Link is closed.
	HostNS *netns.Handle
	// HostVeth names the host end; "" picks a unique "nsn-" name.
	HostVeth string
	// NSVeth names the end inside the namespace; "" means "eth0".
	NSVeth string
	// HostAddr and NSAddr are the two addresses, inside the IPv4 prefix;
	// the zero value means the first and second host address of it
	// (10.0.0.1 and 10.0.0.2 for 10.0.0.0/24). HostAddr is the
	// namespace's gateway.
	HostAddr, NSAddr netip.Addr
	// Prefix6 gives the link an IPv6 network besides the IPv4 one given
	// to Connect (dual stack), for example a ULA /64 such as fd00:1::/64
	// (at most /126, at least /32). An IPv6-only link takes its prefix
	// as Connect's cidr (or here, with a zero cidr). The host end and the
	// namespace get addresses in it at once, without duplicate address
	// detection (usable when Connect returns), the namespace a default
	// IPv6 route via the host end. IPv6 leaves by the same uplink as
	// IPv4, masqueraded out of the uplink's global IPv6 address unless
	// RoutedIPv6 is set, with the same isolation as IPv4. IPv6 is
	// forwarded per interface (net.ipv6.conf.IF.force_forwarding, Linux
	// 6.17 and later), on the host end and the uplink only: the global
	// switch is never touched, the uplink keeps accepting router
	// advertisements, and the last Close puts its setting back. On an
	// older kernel see IPv6GlobalForwarding.
	Prefix6 netip.Prefix
	// IPv6GlobalForwarding lets Connect, on a kernel without per-interface
	// IPv6 forwarding (before Linux 6.17: Debian 12 and 13, RHEL 9 and 10,
	// Ubuntu 22.04 and 24.04), turn on net.ipv6.conf.all.forwarding while
	// IPv6 links need it; without it such a Connect fails with
	// ErrNoIPv6Forwarding (unless the host forwards IPv6 already). What
	// nsnet then changes on the host, and puts back after the last link of
	// any process (or Sweep, after a crash): accept_ra 1 becomes 2 on
	// default and every interface (so they keep accepting router
	// advertisements, and a SLAAC host its default route), the switch goes
	// on (which sets every interface's forwarding), and the forward chain
	// drops every forwarded IPv6 packet that is not a link's, so the host
	// forwards nothing it did not before. Interfaces made meanwhile get
	// accept_ra 2 from default and keep it (the same as 1 with forwarding
	// off). Ignored where the kernel has per-interface forwarding.
	IPv6GlobalForwarding bool
	// Pool and PoolBits say where Connect takes the link's IPv4 prefix when
	// its cidr is the zero Prefix (and Prefix6 is unset): the next /PoolBits
	// of Pool that overlaps no route or address of the host and no live
	// link of any process (Link.Prefix reports it). The zero values mean
	// 10.200.0.0/13 and /24 (2,048 links; why that range: DefaultPool).
	// With none free, Connect fails with ErrPoolExhausted.
	Pool     netip.Prefix
	PoolBits int
	// AutoPrefix6 gives the link an IPv6 network too, without naming one
	// (Prefix6 unset): the next free /64 of the host namespace's unique
	// local /48, one fd00::/8 prefix that every process finds by itself
	// (hashed from the machine's id and the namespace's). Link.Prefix6
	// reports it.
	AutoPrefix6 bool
	// HostAddr6 and NSAddr6 are the two addresses inside Prefix6; the
	// zero value means its first and second host address (fd00:1::1 and
	// fd00:1::2 for fd00:1::/64).
	HostAddr6, NSAddr6 netip.Addr
	// RoutedIPv4 and RoutedIPv6 forward the family's traffic with the
	// namespace's own addresses, without masquerade, for a prefix the
	// outside routes to the host (a delegated IPv6 prefix, say). The
	// isolation stays: out of the uplink only, replies back, nothing
	// unsolicited in. The default masquerades both families.
	RoutedIPv4, RoutedIPv6 bool
	// MTU of the veth pair; 0 keeps the kernel default (1500).
	MTU int
	// NSMAC is the namespace end's hardware address (a unicast one); nil
	// lets the kernel choose (a CNI runtime gives back a container's).
	NSMAC net.HardwareAddr
	// AllowSiblings lets this link reach, and be reached by, other links
	// that also set it. By default every Link is its own network: two
	// connected namespaces cannot reach each other through the host.
	AllowSiblings bool
	// AllowForeignDrop lets Connect go ahead on a host where another
	// firewall drops forwarded packets (see ErrForeignDrop: Docker's
	// FORWARD policy, firewalld's final reject, a final DROP rule, the
	// legacy iptables FORWARD policy). An accept in nsnet's table does
	// not override that drop, so forwarded traffic of the namespace is
	// dropped there unless the caller accepts it in that chain too: the
	// recipe for each firewall is in the repository's docs/firewalls.md.
	// By default such a host is refused with ErrForeignDrop: nsnet never
	// changes another table.
	AllowForeignDrop bool
	// DockerUser, on a Docker host, accepts the link's packets in Docker's
	// DOCKER-USER chain (which Docker's FORWARD chain, policy drop, jumps
	// to first): "-i HOSTVETH -j ACCEPT" and "-o HOSTVETH -j ACCEPT" at its
	// top, commented with the owner, in the shapes iptables-nft makes (so
	// "iptables -S" reads them), in ip6 filter too where Docker manages
	// IPv6. They come back after a reload, come when Docker starts after
	// the link, and go with Close (Sweep: dead owners'); nsnet's own table
	// still filters the packets. With Docker on legacy iptables, which
	// nsnet never writes, Connect fails with ErrForeignDrop saying what to
	// run.
	DockerUser bool
	// Persistent makes a link that outlives this process (a CNI plugin's):
	// its marks name the persistent owner, which no process holds, so
	// Sweep never takes it for a dead one's leftovers. Remove (by its host
	// end's name: give HostVeth one you can find again) removes it from any
	// process. The process keeps nothing of it: no reload guard, no DNS
	// (DNS must be DNSAuto or DNSNone), no DOCKER-USER rules.
	Persistent bool
	// Tag is kept in a persistent link's marks, and given back by
	// PersistentLinks: what the caller needs to tell its links apart
	// later (a CNI plugin, its network and attachment). At most 100
	// printable characters.
	Tag string
	// Ports are published at Connect (see Port and Link.Publish).
	Ports []Port
	// ToNS and FromNS impair the traffic towards the namespace and from it
	// (delay, loss, rate: package qdisc); Link.Impair changes them live.
	ToNS, FromNS qdisc.Impairment
	// PortsReserved says the caller reserves the host ports itself (a
	// container runtime holding them bound, as podman's conmon does): a
	// port a socket of the host uses is not refused. Ports of other
	// links stay refused (the kernel's exclusive add).
	PortsReserved bool
	// DNS chooses how names resolve in the namespace (see DNSMode); the
	// zero value, DNSAuto, does what works on the host. Connect writes
	// the namespace's resolv.conf into its netns.EtcDir (for a named
	// namespace /etc/netns/NAME/resolv.conf, which "ip netns exec" binds
	// over /etc/resolv.conf too, as netns.Handle.Start does), unless a
	// resolv.conf is there already; Close removes what it wrote.
	DNS DNSMode
	// DNSServers are the name servers with DNS: DNSServers; search
	// domains and options come from the host's resolv.conf.
	DNSServers []netip.Addr
}

// DNSMode is how names resolve in a connected namespace.
type DNSMode int

const (
	// DNSAuto reads the host's /etc/resolv.conf: its servers that the
	// namespace can reach are written for it; where the host's resolver
	// listens on loopback only, the upstream servers of systemd-resolved
	// (/run/systemd/resolve/resolv.conf) are used, or else DNSRelay. With
	// no /etc/resolv.conf on the host nothing is written: the namespace
	// resolves as the host would without one (it will not); where the
	// directory cannot be written (a read-only /etc, as in many
	// containers), nothing is either, and Connect goes on.
	DNSAuto DNSMode = iota
	// DNSServers writes Config.DNSServers.
	DNSServers
	// DNSRelay relays the namespace's queries, UDP and TCP, from the
	// link's host address (port 53, the namespace's name server) to the
	// host's resolver on loopback (the first loopback server of its
	// resolv.conf, or 127.0.0.53), in this process, for as long as the
	// link lives: for dnsmasq, unbound or systemd-resolved with per-link
	// DNS, where no server list can be copied. Only queries from the
	// link's prefix are answered, and a namespace cannot exhaust the
	// process: per link at most 64 UDP queries and 16 TCP connections
	// (8 per client) in flight, 512 and 256 for all links, TCP idle 10 s;
	// more is refused, not queued.
	DNSRelay
	// DNSNone writes nothing: the namespace's commands read the host's
	// /etc/resolv.conf.
	DNSNone
)

// String names the mode.
func (m DNSMode) String() string {
	switch m {
	case DNSAuto:
		return "auto"
	case DNSServers:
		return "servers"
	case DNSRelay:
		return "relay"
	case DNSNone:
		return "none"
	}
	return fmt.Sprintf("DNSMode(%d)", int(m))
}

// ErrForeignDrop is matched by Connect's error on a host where another
// firewall drops forwarded packets: an nftables forward chain of another
// table whose policy is drop or whose last rule drops or rejects
// everything (Docker, firewalld, "iptables -A FORWARD -j DROP"), or the
// legacy iptables FORWARD policy DROP. The error names the chain. See
// Config.AllowForeignDrop.
var ErrForeignDrop = errors.New("another firewall drops forwarded packets")

// ErrNoIPv6Forwarding is matched by Connect's error for a link with an
// IPv6 network on a kernel without per-interface IPv6 forwarding
// (net.ipv6.conf.IF.force_forwarding, Linux 6.17) unless
// Config.IPv6GlobalForwarding is set, or where /proc/sys cannot be
// written (a read-only /proc/sys, as in many containers), unless the host
// forwards IPv6 on every interface already
// (net.ipv6.conf.all.forwarding=1).
var ErrNoIPv6Forwarding = nl.ErrNoForceForwarding

// ErrInvalidName is matched by the error for a malformed interface name; it is
// netns.ErrInvalidName (one value across nsnet).
var ErrInvalidName = nl.ErrInvalidName

// SweepResult says what Sweep removed.
type SweepResult struct {
	Links    []string // host veth ends deleted (their peers went with them)
	Elements int      // set entries removed from the library's table
	Uplinks  []string // uplinks whose forwarding was turned off again ("NAME (IPv6)" for IPv6's, "all (IPv6)" for the global switch)
	Table    bool     // the library's table was removed (no owner left)
	// DockerUser counts the rules removed from Docker's DOCKER-USER chain
	// (see Config.DockerUser).
	DockerUser int
	// ResolvConfs counts the resolv.conf files removed (see Config.DNS).
	ResolvConfs int
}

// TableName is the library's own nftables table (family inet, for IPv4 and IPv6). Every rule,
// chain and set nsnet makes lives there; no other table is ever changed.
const TableName = nftset.TableName

// invalid is an ErrInvalidConfig saying what is wrong.
func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
}
