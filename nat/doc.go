// Package nat connects a network namespace to the outside world through an
// uplink with nftables NAT, in one call:
//
//	l, err := nat.Connect(ns, "eth0", netip.MustParsePrefix("10.0.0.0/24"))
//	...
//	defer l.Close()
//
// [Connect] does what the tutorial does by hand with ip(8), iptables(8) and
// sysctl(8) — veth pair, addresses, links up, default route, masquerade and
// forwarding rules, forwarding switched on — and [Link.Close] undoes exactly
// that, so "nft list ruleset", the links, addresses, routes and sysctls read
// as before. [Config] covers the rest (host namespace, names, addresses,
// MTU, siblings).
//
// # Rules
//
// Every rule lives in the library's own table, "ip nsnet" ([TableName]),
// made with the first Link and removed with the last (by whichever process
// closes it; the delete only commits if no other process added anything
// meanwhile). Per-link state goes into nftables sets, so N links mean N set
// elements, not N rules: nine rules and two base chains, and the same
// per-packet work, with 1 link or 1,000. No other table, chain or rule is
// touched. The set elements carry the owning process's pid and start time,
// as does the host veth's ifalias, so [Sweep] can remove what a crashed
// process left. [CloseAll] tears many links down at once.
//
// # Secure by default
//
// A Link behaves like a home router: the namespace opens connections to
// the outside and receives the replies; nothing unsolicited from outside
// reaches it, even from a host that routes the namespace's prefix to the
// uplink; packets from the namespace whose source the host would not route
// back out of its link (anything outside its prefix: a strict reverse-path
// check) are dropped; and two connected namespaces cannot reach each other
// through the host unless both set [Config.AllowSiblings]. These drops
// match only the library's own links.
//
// # IPv4 only
//
// nsnet connects IPv4. The host end of each veth has IPv6 turned off
// (disable_ipv6, or where /proc/sys is read-only no IPv6 address
// generation): the kernel keeps the IPv6 routes of every link in shared
// lists, which made each Connect slower the more links the host had. The
// namespace's end keeps IPv6 as usual.
//
// # Forwarding
//
// IPv4 forwarding is turned on per link — on the host end of the veth and
// on the uplink — rather than with the global net.ipv4.ip_forward switch.
// The uplink's original setting is recorded in the table's fwd set and
// restored when the last Link through it closes, in whichever nsnet process
// that is (they coordinate through a lock scoped to the network namespace).
//
// # Coexistence
//
// An accept in one nftables table does not override a drop in another on
// the same hook. On a host whose forward chain in another table drops by
// policy (Docker's iptables FORWARD chain, for one), Connect fails with
// [ErrForeignDrop] naming the chain, unless [Config.AllowForeignDrop] says
// the caller has accepted the traffic there.
//
// # Errors
//
// Input is checked before the kernel is touched: [ErrInvalidConfig],
// [ErrInvalidName], [ErrOverlap] and [ErrForeignDrop] for what Connect
// refuses, os.ErrNotExist
// for a missing uplink, os.ErrExist for a namespace already connected or a
// veth name in use. A failure part-way undoes what was done and names the
// step. Connect and Close are safe for concurrent use.
package nat
