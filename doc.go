// Package nsnet is the overview of a set of small packages that do in pure
// netlink what people otherwise do as root with ip(8) and iptables(8): create
// network namespaces, veth pairs, addresses and routes, and connect a
// namespace to the outside world through nftables NAT.
//
// No process is ever started: every package speaks AF_NETLINK (rtnetlink and
// nf_tables) through github.com/mdlayher/netlink,
// github.com/jsimonetti/rtnetlink/v2 and github.com/google/nftables, plus a
// few plain system calls (setns, unshare, mount).
//
// # Packages
//
//   - [github.com/nsnet/nsnet/netns]: named and anonymous network namespaces
//     (ip netns add/del/list/exec), running a function or a command inside one.
//   - [github.com/nsnet/nsnet/veth]: veth pairs whose peer is created directly
//     inside its namespace, and link operations (up, down, move, delete,
//     lookup, list) for links of any kind.
//   - [github.com/nsnet/nsnet/addr]: IPv4 and IPv6 addresses on a link.
//   - [github.com/nsnet/nsnet/route]: routes, the default route, and route
//     lookups (ip route get).
//   - [github.com/nsnet/nsnet/nat]: the one call that connects a namespace to
//     the outside world through an uplink, with masquerading, forwarding and
//     isolation in the library's own nftables table.
//
// # The one call
//
//	ns, err := netns.New("example-ns1")                   // ip netns add example-ns1
//	if err != nil { ... }
//	defer netns.Delete("example-ns1")
//	defer ns.Close()
//	l, err := nat.Connect(ns, "eth0", netip.MustParsePrefix("10.0.0.0/24"))
//	if err != nil { ... }
//	defer l.Close()                                        // everything undone
//
// # Privileges
//
// Creating namespaces needs CAP_SYS_ADMIN (unshare, mount); everything else
// needs CAP_NET_ADMIN in the namespace acted on. In practice: run as root.
//
// # Threads and namespaces
//
// A network namespace belongs to an OS thread, not to a process or a
// goroutine. No function in nsnet moves the calling goroutine's thread: every
// netlink socket is opened directly inside the namespace it acts in, and the
// few operations that must switch a thread (creating a namespace,
// [netns.Handle.Do], starting a command) do so on a separate, locked thread
// that is restored afterwards, or discarded by the Go runtime if it cannot be.
// Every operation takes the namespace it acts in as a *netns.Handle, where
// nil means the caller's current namespace.
package nsnet
