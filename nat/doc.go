// Package nat connects a network namespace to the outside world through an
// uplink with nftables NAT, in one call:
//
//	l, err := nat.Connect(ns, "", netip.MustParsePrefix("10.0.0.0/24")) // "": the default route's link
//	...
//	defer l.Close()
//
// [Connect] does what the tutorial does by hand with ip(8), iptables(8) and
// sysctl(8) — veth pair, addresses, links up, default route, masquerade and
// forwarding rules, forwarding switched on — and [Link.Close] undoes exactly
// that, so "nft list ruleset", the links, addresses, routes and sysctls read
// as before. It also gives the namespace a resolv.conf that works on the
// host it runs on ([Config.DNS], [DNSMode]: the host's servers,
// systemd-resolved's upstream ones, or a relay to a resolver on the host's
// loopback). [Config] covers the rest (host namespace, names, addresses,
// MTU, siblings, DNS, Docker's DOCKER-USER chain, a context with
// [Config.ConnectContext]).
//
// # Rules
//
// Every rule lives in the library's own table, "inet nsnet" ([TableName]),
// made with the first Link and removed with the last (by whichever process
// closes it; the delete only commits if no other process added anything
// meanwhile). A table of that name that nsnet did not make, or that an
// older nsnet made without this version's rules, is refused
// ([ErrForeignTable]) and never changed. Per-link state goes into nftables
// sets and maps, so N links (and N published ports, see [Port]) mean N set
// elements, not N rules: thirty-six rules and five base chains, and the
// same per-packet work, with 1 link or 1,000. No other table, chain or rule
// is touched (except Docker's DOCKER-USER chain with [Config.DockerUser]).
//
// # Identity, not names
//
// Links are matched by interface index (meta iif/oif), which the kernel
// never gives two live links and a rename does not change: a renamed veth
// or uplink keeps its rules; a link whose name is reused by another gets
// none of them; a deleted and re-created uplink gets a new index, and the
// namespace's packets are dropped rather than sent out of it
// un-masqueraded. Close undoes from the library's own record of what its
// Connect made (indexes, entries), never from the Link's exported fields or
// by name, and removes what is still there when parts were removed by
// someone else, reporting those (os.ErrNotExist).
//
// # Closing
//
// [Link.Close] returns only when nothing of what it undoes is left. After
// the DNS relay and resolv.conf, the veth pair goes (traffic stops, names
// and addresses are free): Close waits until the kernel has unlisted both
// ends, about a millisecond, not for the kernel's RCU grace period after
// it (tens of milliseconds, which the kernel finishes by itself even if
// the process exits at once); then the link's connection tracking entries
// (marked with its index: those it forwards, its namespace's with the
// host, the relay's with the host's resolver) and set entries go and,
// after the last link, the table and the uplink's forwarding. A process
// may exit, or be killed, the moment Close returns. [CloseAll] does the
// same for many links with one delete.
//
// # Firewall reloads
//
// "nft flush ruleset" (a firewall reload, an nftables restart) deletes the
// library's table under live links, and with it the namespace's NAT
// chains: the kernel then unregisters its NAT hooks and translates
// nothing, not even established connections, and nothing filters the
// links' traffic. Each process with links watches for it (every 20 ms, and
// at every Connect) and puts its table and its links' entries back, with
// the same isolation and masquerade: about 20-40 ms after the flush. In
// that window the links' packets leave un-masqueraded (measured: 2-3% of a
// saturating UDP stream across five reloads). A table the kernel protects
// from other processes' flushes (its owner flag, Linux 5.12) would close
// the window, but nft before 1.0.9 prints broken JSON for the whole
// ruleset while one exists (Debian 12, Ubuntu 22.04), so nsnet does not
// make one.
//
// # Several processes
//
// Processes share the table and coordinate through the kernel alone (the
// protocol is described in packages nat/internal/owner, table and
// uplinks). Each live link's prefix is
// claimed in the claims map with an exclusive add, so of two processes
// connecting overlapping prefixes at once exactly one succeeds. Everything
// nsnet makes carries the mark "nsnet owner=ID pid=P" (the host veth's
// ifalias, each set entry's comment), where ID is a random owner ID whose
// liveness any process in the host namespace can check (an abstract unix
// socket the owner holds there): unlike a pid, it means the same from every
// PID namespace and is never reused. [Sweep] removes what dead owners left,
// and Connect reclaims a prefix held only by a dead owner's leftovers;
// [Links] lists every link of every process.
//
// # Secure by default
//
// A Link behaves like a home router: the namespace opens connections to
// the outside and receives the replies; nothing unsolicited from outside
// reaches it, even from a host that routes the namespace's prefix to the
// uplink; packets from the namespace whose source the host would not route
// back out of its link (anything outside its prefix: a strict reverse-path
// check) are dropped, forwarded or to the host, as are its ICMP errors
// about another link's connections: no namespace speaks in another's name;
// and two connected namespaces cannot reach each other through the host
// unless both set [Config.AllowSiblings]. These drops match only the
// library's own links.
//
// What is filtered is the links' forwarded traffic. A namespace's
// connections to the host's own addresses (its services, the host end, the
// uplink's address) are delivered locally, and nsnet filters them only as
// above and for loopback addresses, router advertisements and redirects:
// filter the host's input where the namespaces must not reach its services.
//
// # Published ports
//
// [Config.Ports] and [Link.Publish] give what "docker run -p" gives: a
// port reachable from outside at the uplink's addresses (the server sees
// the client's address), from the host (at 127.0.0.1 too), other links
// and the namespace itself. Mappings are entries of two maps; a port
// published already, by any process, or used by a socket of the host, is
// refused (os.ErrExist). 127.0.0.1 stays the host's: route_localnet on
// that host end only, no prerouting DNAT of 127.0.0.0/8 (CVE-2020-8558),
// loopback destinations from links dropped. Unpublish and Close delete
// the port's conntrack entries, Publish those of flows already sending to
// it, so a port moved to another namespace takes effect at once.
//
// # DNS
//
// By default ([DNSAuto]) Connect writes the namespace's resolv.conf into
// its netns.EtcDir (/etc/netns/NAME, as ip netns exec uses) with the
// host's servers the namespace can reach; a resolver on loopback is
// replaced by systemd-resolved's upstream servers, or else relayed (as
// Docker's embedded DNS does). The file appears whole or not at all; one
// the user put there is kept; Close removes what it wrote, Sweep what
// dead owners wrote.
//
// # IPv6
//
// A link can have an IPv6 network beside its IPv4 one ([Config.Prefix6]),
// or only an IPv6 one (an IPv6 prefix as Connect's cidr):
//
//	l, err := nat.Config{Prefix6: netip.MustParsePrefix("fd00:1::/64")}.Connect(ns, "", netip.MustParsePrefix("10.0.0.0/24"))
//
// Both families go through the same table, sets and rules, with the same
// guarantees: out by the uplink only, masqueraded out of the uplink's
// global IPv6 address (or routed, with the namespace's own addresses:
// [Config.RoutedIPv6], [Config.RoutedIPv4]), replies and the ICMPv6 errors
// of its flows back (packet too big), nothing unsolicited, no spoofed
// sources, no traffic between links unless both allow it. The host end
// takes no router advertisement or redirect from the namespace. IPv6 is
// forwarded per interface (net.ipv6.conf.IF.force_forwarding, Linux 6.17
// and later), on the host end and the uplink only: the global switch is
// never touched, and the uplink keeps the default route it learns from
// router advertisements. On an older kernel a link with IPv6 fails with
// [ErrNoIPv6Forwarding] unless [Config.IPv6GlobalForwarding] lets nsnet
// turn the global switch on while links need it (accept_ra 1 becomes 2,
// every other forwarded IPv6 packet is dropped, and the last link of any
// process, or Sweep, puts back every value it changed). An IPv4-only
// link's host end has IPv6 turned off, as before: the kernel walks every
// IPv6 route of the host at each change of a link with IPv6, so a host end
// without it costs nothing there.
//
// # Point-to-point and persistent links
//
// A single-address prefix (/32, /128) with [Config.HostAddr]
// ([Config.HostAddr6]) outside it makes a point-to-point link: many links
// share one subnet and one gateway address, each namespace with its own
// address (how CNI's ptp plugin lays out a network). [Config.Persistent]
// makes a link that outlives the process that made it, for programs that
// set a namespace up and exit: [Remove] removes it from any process, and
// [PersistentLinks] lists them. The CNI plugin (package
// github.com/nsnet/nsnet/cni) is built on both.
//
// # Forwarding
//
// Forwarding is turned on per link and family (host end and uplink), not
// with the global switches. The uplink's original setting is recorded in
// the uplinks set (one entry per process using it) and restored by the
// last Link through it, in whichever process that is (under the host
// lock). The host end's forwarding goes on last, once the rules that
// filter and masquerade its packets are in place.
//
// # Coexistence
//
// An accept in one table does not override another table's drop: on a
// host whose forward chain elsewhere drops (Docker's, firewalld's), Connect
// fails with [ErrForeignDrop] naming it, unless [Config.AllowForeignDrop].
//
// # Inside the package
//
// nat keeps the public API and the order of the steps (connect_linux.go,
// close_linux.go); each concern with state of its own is a package under
// nat/internal (listed in the repository's CONTRIBUTING.md).
//
// The mutexes, and what each guards:
//
//   - a Link's or Rules' mu: its record (closed, err, ports, DNS), held by
//     Close, Publish and Unpublish for their whole run;
//   - hostState.restoreMu: the live links' entries against the guard's
//     restores (shared by Publish, Unpublish and Close, exclusive by a
//     restore from its snapshot to its commit);
//   - hostState.mu: the host state's counts, its host handle and live
//     links; never held across I/O;
//   - hostState.ownerMu: the owner socket, the guard's stop channel, the
//     ruleset monitor and the guard table, made and released under it;
//   - registry (package level): this process's host states; and
//     addrplan's reservations: its prefixes and connected namespaces;
//     each taken alone;
//   - table.Host's (idle sockets, the table's state; its ownMu, taken
//     just before, the relays' conntrack marks, one at a time),
//     uplinks.Shares' (this process's uplink shares), firewall.Monitor's,
//     hostview.View's, the DNS relay's and its dns.Conns': their own
//     state, taken last (nothing else is taken under them).
//
// They are taken in that order: a Link's mu, restoreMu, mu, ownerMu, then
// one of the last ones; the host lock (owner.WithHostLock, across
// processes) is taken with at most a Link's mu and restoreMu held. The
// goroutines: per host state with links, the guard (guard_linux.go: polls
// the ruleset monitor every 20 ms, with a host handle of its own); per
// closing link, the one that waits for the kernel's acknowledgement of its
// delete and then closes the idle sockets (nl.DeleteLinks); per link with
// a relay, the relay's listeners and one per query or connection in flight.
//
// # Errors
//
// Input is checked before the kernel is touched: [ErrInvalidConfig],
// [ErrInvalidName], [ErrOverlap], [ErrForeignDrop] and [ErrForeignTable]
// for what Connect refuses, os.ErrNotExist for a missing uplink,
// os.ErrExist for a namespace already connected, a veth name in use or a
// second AddRules on one link. A failure part-way undoes what was done and
// names the step; it never changes anything of another live link. Close
// returns an error matching os.ErrNotExist when parts of the link were
// already gone. Connect and Close are safe for concurrent use; no exported
// function or method panics on nil or zero values.
package nat
