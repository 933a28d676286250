package nat

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/addrplan"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/qdisc"
)

// Link is one namespace connected to the outside through NAT. Its fields
// say what Connect made, for reading; Close does not look at them (it
// undoes from a record of its own), so changing them changes nothing.
type Link struct {
	Prefix   netip.Prefix // the namespace's IPv4 network (zero for an IPv6-only link)
	Uplink   string       // the host link its traffic leaves by (its name at Connect)
	HostVeth string       // host end of the veth pair (its name at Connect)
	NSVeth   string       // end inside the namespace
	HostAddr netip.Prefix // IPv4 address of HostVeth, the namespace's gateway
	NSAddr   netip.Prefix // IPv4 address of NSVeth
	// Prefix6, HostAddr6 and NSAddr6 are the same for IPv6 (zero for an
	// IPv4-only link).
	Prefix6, HostAddr6, NSAddr6 netip.Prefix

	*owned // the library's record (nil in a Link not made by Connect)
}

// String describes the link in one line, naming each side, as
// "10.0.0.0/24: host nsn-k3f9a0b2c7d (10.0.0.1) <-> namespace eth0 (10.0.0.2), uplink up0"
// (with both families "10.0.0.0/24, fd00::/64: host nsn-… (10.0.0.1, fd00::1) …").
func (l *Link) String() string {
	if l == nil {
		return "<nil>"
	}
	return addrplan.DescribeLink([2][3]netip.Prefix{{l.Prefix, l.HostAddr, l.NSAddr}, {l.Prefix6, l.HostAddr6, l.NSAddr6}}, l.HostVeth, l.NSVeth, l.Uplink)
}

// Rules is the tutorial's iptables and sysctl step on its own, for a veth
// pair made by hand: the link's entries in the library's nftables table and
// IPv4 forwarding on its host end and the uplink. Connect does this itself;
// use AddRules when building the rest with the veth, addr and route
// packages. Close removes exactly what AddRules added.
type Rules struct {
	Prefix   netip.Prefix   // the network behind HostVeth (the first of Prefixes)
	Prefixes []netip.Prefix // all of them, IPv4 first
	HostVeth string         // host end of the pair (or a bridge), made by the caller
	Uplink   string         // the host link the traffic leaves by
	*owned                  // the library's record (nil in Rules not made by AddRules)
}

// Sweep removes what dead processes left behind in host (nil: the current
// namespace): processes killed or crashed before they closed their Links
// and Rules. It finds the library's marks — the host veth's ifalias and
// the comment of every set entry, "nsnet owner=ID pid=P" — and removes the
// veths and entries of owners that no longer run, whatever PID namespace
// they ran in (liveness is not a pid: see the package doc, Several
// processes), turns forwarding off again on uplinks that a dead owner had
// turned on and no live one uses, and removes the table if nothing is left
// in it. What live
// processes own is never touched. Safe at any time and at any size,
// concurrently with other processes' Connect, Close and Sweep, for example
// at program start.
//
// A process killed in the middle of Connect, between creating a veth pair
// with a name it was given and marking it, leaves an unmarked pair that
// Sweep cannot attribute and leaves alone.
func Sweep(host *netns.Handle) (SweepResult, error) {
	return SweepContext(context.Background(), host)
}

// SweepContext is Sweep with a context that bounds its wait for the host
// lock, which other processes' Connect and Close hold briefly.
func SweepContext(ctx context.Context, host *netns.Handle) (SweepResult, error) {
	if ctx == nil {
		return SweepResult{}, fmt.Errorf("nat: sweep: %w: nil context", ErrInvalidConfig)
	}
	res, err := sysSweep(ctx, host)
	return res, nl.NeedPriv(err, "CAP_NET_ADMIN in the host namespace, and CAP_SYS_ADMIN to enter namespaces")
}

// CloseAll closes many links at once, much faster than calling Close on
// each: in the order Close follows, their veth pairs are moved into a
// fresh device group and deleted with one request (the kernel's grace
// period after it is paid once for all of them), and their set entries
// removed with one nftables transaction (per 64 KiB of messages).
// When it returns, every link, address, route, rule and forwarding setting
// of the links is gone, as after Close, from the library's own records.
// Links already closed are skipped; nil entries are ignored, zero ones
// reported. Errors are joined; each link ends closed either way.
func CloseAll(links ...*Link) error {
	return nl.NeedPriv(sysCloseAll(links...), "CAP_NET_ADMIN in the host namespace, and CAP_SYS_ADMIN to enter namespaces")
}

// AddRules masquerades the traffic of the link hostVeth (in host; nil: the
// current namespace) leaving by uplink, and forwards it (cidrs: one
// prefix, or an IPv4 and an IPv6 one; for IPv6, hostVeth's and the
// uplink's force_forwarding, see Config.Prefix6), with the same
// rules and isolation as Connect ("iptables -t nat -A POSTROUTING -s CIDR
// -o UPLINK -j MASQUERADE", the two FORWARD rules, and forwarding on). An
// empty uplink means the link of the default route. hostVeth must exist
// (a veth's host end, or a bridge with the namespaces behind it), and the
// host must route the prefixes through it (an address in each on hostVeth
// does that): packets from the link whose source would not be routed back
// out of it are dropped as spoofed. Links are matched by interface index:
// the rules follow hostVeth and the uplink through renames. Overlap with
// the host's routes is not checked (the caller's own address on hostVeth
// makes one); overlap with other live Links and Rules, of any process, is.
// One Rules per link: a second AddRules for the same hostVeth while the
// first is live fails with an error matching os.ErrExist. A failure
// part-way undoes what was done, hostVeth's forwarding included.
func AddRules(host *netns.Handle, hostVeth, uplink string, cidrs ...netip.Prefix) (*Rules, error) {
	r, err := sysAddRules(host, hostVeth, uplink, cidrs)
	return r, nl.NeedPriv(err, "CAP_NET_ADMIN in the host namespace, and CAP_SYS_ADMIN to enter namespaces")
}

// Publish publishes ports (see Port) of the address to, inside the Rules'
// prefixes (a namespace behind HostVeth), in to's family only: the
// Publish of a Link, for links built by hand. Mappings, checks and errors
// are Link.Publish's; Close removes them all.
func (r *Rules) Publish(to netip.Addr, ports ...Port) error {
	return nl.NeedPriv(r.sysPublish(to, ports), "CAP_NET_ADMIN in the host namespace")
}

// Unpublish removes ports published to the address to (the zero Addr: to
// any) and forgets their connections, as Link.Unpublish.
func (r *Rules) Unpublish(to netip.Addr, ports ...Port) error {
	return nl.NeedPriv(r.sysUnpublish(to, ports), "CAP_NET_ADMIN in the host namespace")
}

// Ports returns the ports published to the address to (zero: to any).
func (r *Rules) Ports(to netip.Addr) []Port { return r.rec().ports(to) }

// Close undoes exactly what AddRules did, from its own record (renames of
// the link or the uplink do not matter): HostVeth's forwarding goes back
// off if AddRules turned it on (first, so that no packet of the link
// leaves once its rules are gone), the link's connection tracking entries
// are forgotten, its set entries removed (and the library's table after
// the last user), and the uplink's forwarding restored after its last
// user. The link itself is the caller's. Idempotent; a nil or zero Rules
// returns an error.
func (r *Rules) Close() error {
	return nl.NeedPriv(r.sysClose(), "CAP_NET_ADMIN in the host namespace, and CAP_SYS_ADMIN to enter namespaces")
}

// Close undoes everything Connect made, from the library's own record of
// it (not from the Link's fields, nor by names the host may have reused),
// and returns only when nothing of it is left anywhere. It stops the DNS
// relay and removes the resolv.conf it wrote. It deletes the veth pair and
// waits until the kernel has unlisted both ends (about a millisecond; the
// kernel's RCU grace period after a delete, tens of milliseconds, is
// finished by the kernel alone, even if the process exits at once): from
// then on no packet passes through the link, either way, and its names
// and addresses are free. It deletes the connection tracking entries of
// the link's connections, and of other links' connections to its
// published ports, so that no later holder of the prefix receives what
// was meant for this one. Then, in one nftables transaction, it removes
// the link's set entries and prefix claim; the last of the process's
// links out of the uplink also removes the process's share of it, and
// when no nsnet process uses the uplink any more its forwarding goes back
// to what it was. After the process's last link in the host, the
// library's table goes too if no other process has entries in it. The
// process may exit, or be killed, the moment Close returns: it leaves
// nothing for Sweep.
//
// Close removes everything still there even when a part was removed or
// changed by someone else meanwhile (a renamed or deleted veth or uplink, a
// flushed ruleset), and then returns an error matching os.ErrNotExist that
// says what was already gone. It goes on after a failed step and returns
// all errors joined. The namespace itself belongs to the caller and stays,
// with lo up. Close is idempotent: a second call returns the first call's
// result. A nil or zero Link returns an error. Safe for concurrent use.
func (l *Link) Close() error {
	return nl.NeedPriv(l.sysClose(), "CAP_NET_ADMIN in the host namespace, and CAP_SYS_ADMIN to enter namespaces")
}

// Connect gives the namespace ns a path to the outside world through the
// link uplink of the current namespace, with cidr as its network (the zero
// Prefix: a free one, see Config.Pool): Config{}.Connect(ns, uplink, cidr).
// An empty uplink means the link of the default route.
func Connect(ns *netns.Handle, uplink string, cidr netip.Prefix) (*Link, error) {
	return Config{}.Connect(ns, uplink, cidr)
}

// Connect connects ns to the outside world through uplink (in c.HostNS;
// "" for the link of the default route), giving it the network cidr (the
// zero Prefix, with no Prefix6: the next free prefix of c.Pool). It is the
// tutorial in one call:
//
//  1. checks everything before touching the kernel: ns is given and not
//     the host namespace, cidr is an IPv4 prefix with room for two hosts
//     (or an IPv6 one, for an IPv6-only link; see Config.Prefix6) and the
//     prefixes overlap no address or route of the host nor another live
//     Link (of any process), the uplink exists, is up and has an address
//     of each family it masquerades;
//  2. creates the veth pair with its peer made inside ns;
//  3. adds the link to the sets of the library's nftables table, keyed by
//     interface index: masquerade out of the uplink, forwarding out of the
//     link, replies back in, nothing unsolicited, no spoofed sources, no
//     traffic between links unless AllowSiblings; and claims its prefixes
//     (in the same transaction), which no other process can then claim;
//  4. turns on forwarding of the link's families for the uplink (restored
//     when its last nsnet user, in any process, is gone);
//  5. brings up the namespace's end with its addresses and default
//     routes, and the host end with its addresses (an IPv4-only link's
//     host end with IPv6 off: the namespace's end keeps it) and its
//     forwarding, which passes nothing before the rules that filter and
//     masquerade the link's packets are in place.
//
// A failure part-way undoes what was done and returns the first error,
// naming the step. A prefix held only by the leftovers of a dead process
// (one killed before it closed its links) is reclaimed: Connect sweeps
// them (see Sweep) and tries once more. Needs CAP_NET_ADMIN in both
// namespaces (and CAP_SYS_ADMIN to enter them). Safe for concurrent use.
func (c Config) Connect(ns *netns.Handle, uplink string, cidr netip.Prefix) (*Link, error) {
	return c.ConnectContext(context.Background(), ns, uplink, cidr)
}

// ConnectContext is Connect with a context, as net.Dialer.DialContext is
// Dial with one: when ctx is done before Connect finishes (while it waits
// for the host lock that other processes hold briefly, or between two
// steps), it undoes what it made and returns an error matching ctx.Err().
// Once it has returned a Link, ctx no longer matters.
func (c Config) ConnectContext(ctx context.Context, ns *netns.Handle, uplink string, cidr netip.Prefix) (*Link, error) {
	if ctx == nil {
		return nil, fmt.Errorf("nat: connect %v: %w: nil context", cidr, ErrInvalidConfig)
	}
	l, err := c.sysConnect(ctx, ns, uplink, cidr)
	return l, nl.NeedPriv(err, "CAP_NET_ADMIN in the host namespace, and CAP_SYS_ADMIN to enter namespaces")
}

// Publish publishes ports of the link's namespace (see Port), all or none:
// the "docker run -p" of a Link, also given at Connect with Config.Ports.
// A port published already, by this process or another, or in use by a
// socket of the host, is refused with an error matching os.ErrExist, bad
// input with ErrInvalidConfig, before anything changes. Mappings live in
// two nftables maps (one entry each), so the rules and the work per
// packet stay the same however many there are. Close removes them all.
func (l *Link) Publish(ports ...Port) error {
	return nl.NeedPriv(l.sysPublish(ports), "CAP_NET_ADMIN in the host namespace, and CAP_SYS_ADMIN to enter namespaces")
}

// Unpublish removes published ports (a Port given to Publish, or a part
// of its range) and deletes the connection tracking entries of their
// connections, so that no client stays pinned to them. Ports not published
// match os.ErrNotExist.
func (l *Link) Unpublish(ports ...Port) error {
	return nl.NeedPriv(l.sysUnpublish(ports), "CAP_NET_ADMIN in the host namespace, and CAP_SYS_ADMIN to enter namespaces")
}

// Remove removes the persistent link (see Config.Persistent) whose host
// end is called hostVeth, made by any process, in host (nil: the current
// namespace): the veth pair, if the namespace still holds it, its
// connection tracking entries, its set entries, and the persistent owner's
// share of the uplink's forwarding once no persistent link leaves by it
// (the forwarding goes back off as after a Close, if no other owner uses
// it). Entries whose pair went with a deleted namespace are removed by the
// name too. A host end that is not a persistent nsnet link is refused
// (ErrInvalidConfig); nothing found matches os.ErrNotExist, so a second
// Remove can be ignored.
func Remove(host *netns.Handle, hostVeth string) error {
	return RemoveContext(context.Background(), host, hostVeth)
}

// RemoveContext is Remove with a context that bounds its wait for the host
// lock.
func RemoveContext(ctx context.Context, host *netns.Handle, hostVeth string) error {
	if ctx == nil {
		return fmt.Errorf("nat: remove %s: %w: nil context", hostVeth, ErrInvalidConfig)
	}
	if err := sysRemove(ctx, host, hostVeth); err != nil {
		return nl.NeedPriv(fmt.Errorf("nat: remove %s: %w", hostVeth, err), "CAP_NET_ADMIN in the host namespace, and CAP_SYS_ADMIN to enter namespaces")
	}
	return nil
}

// PersistentLink is a persistent link found in the host (see
// PersistentLinks).
type PersistentLink struct {
	HostVeth string // the host end's name at Connect (Remove takes it)
	Index    int    // the host end's interface index
	Tag      string // Config.Tag
	// Up is false when the host end is gone (its namespace was deleted
	// with it) and only the link's entries are left, for Remove.
	Up bool
}

// PersistentLinks lists the persistent links of host (nil: the current
// namespace), from the library's table, for a program that keeps no
// record of its own (a CNI plugin's garbage collection, say).
func PersistentLinks(host *netns.Handle) ([]PersistentLink, error) {
	pls, err := sysPersistentLinks(host)
	if err != nil {
		return nil, nl.NeedPriv(fmt.Errorf("nat: persistent links: %w", err), "CAP_NET_ADMIN in the host namespace, and CAP_SYS_ADMIN to enter namespaces")
	}
	return pls, nil
}

// LinkInfo is a link nsnet made in a host, by any process (see Links).
type LinkInfo struct {
	HostVeth   string // the host end's name now ("" if it is gone and only its entries are left)
	Index      int    // the host end's interface index
	Owner      string // the owning process's ID (see Sweep)
	PID        int    // the owner's process ID at Connect, in its PID namespace: for people only
	Alive      bool   // the owner still runs (persistent links: always)
	Persistent bool   // Config.Persistent: no process owns it
	Tag        string // a persistent link's Config.Tag
	Namespace  string // the peer's namespace: its name under /run/netns, or "nsid N"
	Uplink     string // the uplink's name now
	Prefix     netip.Prefix
	Prefix6    netip.Prefix
	Ports      []Port // published, one per host address and port
}

// Links lists every link nsnet made in host (nil: the current namespace)
// by any process, live or dead (Sweep removes dead ones), from the table
// and the host's links, changing nothing: what "nsnet ls" shows.
func Links(host *netns.Handle) ([]LinkInfo, error) {
	ls, err := sysLinks(host)
	if err != nil {
		return nil, nl.NeedPriv(fmt.Errorf("nat: links: %w", err), "CAP_NET_ADMIN in the host namespace, and CAP_SYS_ADMIN to enter namespaces")
	}
	return ls, nil
}

// Impair sets, live, how the link impairs its traffic towards the
// namespace and from it (see package qdisc; zero values take it away).
func (l *Link) Impair(toNS, fromNS qdisc.Impairment) error {
	return nl.NeedPriv(l.sysImpair(toNS, fromNS), "CAP_NET_ADMIN in the host namespace, and CAP_SYS_ADMIN to enter namespaces")
}

// Ports returns the link's published ports, one per host address and
// port.
func (l *Link) Ports() []Port { return l.rec().ports(netip.Addr{}) }
