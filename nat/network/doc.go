// Package network puts several namespaces on one subnet, as "docker
// network create" and "docker run --network" do: a Linux bridge in the
// host, made and owned by nsnet, with the network's gateway addresses,
// and a veth pair per member, one end on the bridge and the other in the
// member's namespace. Members reach each other directly (the bridge
// switches their frames; the host routes nothing between them), find
// each other by name, and reach the outside through an uplink,
// masqueraded, as a nat.Link does:
//
//	n, err := network.Create(network.Config{Prefix: netip.MustParsePrefix("10.0.10.0/24")})
//	...
//	srv, err := n.Attach(serverNS, network.MemberConfig{Name: "server"})
//	cli, err := n.Attach(clientNS, network.MemberConfig{Name: "client"})
//	// in clientNS: clientNS.Dial("tcp", "server:8080")
//	...
//	n.Close()
//
// # What a network is made of
//
//   - The bridge ("nsb-" and 11 random characters, or Config.Bridge), with
//     a fixed Ethernet address of its own, no IPv6 address generation, the
//     gateway addresses (the first host address of each prefix) and an
//     IPv6 link-local address fe80::INDEX, marked with its owner in its
//     ifalias as nat's links are.
//   - Its entries in nat's nftables table, through nat.AddRules with both
//     prefixes: to the table the bridge is one link, so the network has
//     every guarantee of a link: masquerade out of its uplink only (by
//     index), nothing unsolicited from the outside, no traffic to other
//     links and networks (nor from them), published ports, the firewall
//     reload guard, the prefix claimed against every other link of any
//     process, and forwarding given back after the last user.
//   - Per member, a veth pair: the host end ("nsm-…") created directly on
//     the bridge (down, marked, no IPv6 link-local), the other end made
//     inside the namespace with the member's Ethernet address, its
//     addresses (without duplicate address detection or link-local
//     address: the network gives them), default routes through the
//     gateway, and lo up.
//   - The anti-spoofing filter: the library's bridge-family table (nft
//     list table bridge nsnet), fixed rules with the members' entries in
//     sets keyed by bridge port, commented with the owner's mark. A frame
//     from a member passes only with the member's own Ethernet and IP
//     source addresses, ARP and neighbour advertisements only for its own
//     addresses; router advertisements, redirects, DHCP server replies,
//     VLAN tags and other protocols are dropped. The host's reverse-path
//     check (nat's) sees the network as one link, so this is what keeps a
//     member from using another member's address, towards the other
//     members as towards the outside. A member's entries are in place
//     before its port comes up, and removed after it is gone.
//   - The name server (unless Config.NoDNS): UDP and TCP on the gateway
//     addresses, port 53, in the process that made the network. It
//     answers A and AAAA for the members' names and aliases (bare, or
//     followed by one of the host's search domains) and passes every other
//     query to the host's first name server (read again whenever the
//     host's resolv.conf changes), as Docker's embedded DNS does; each
//     member's resolv.conf (netns.EtcDir) names it. Names leave
//     with their member. What members can make it do is bounded: 64 UDP
//     queries passed on at once, 16 TCP connections (4 per member, 10 s
//     idle), and 2,000 DNS datagrams a second per member, limited in the
//     bridge table (one member's flood leaves the others' queries room).
//   - The members' ports are in hairpin mode (a member's connection to a
//     published port of its own comes back to it where br_netfilter bridges
//     it), and frames between members are not tracked by conntrack: they are
//     never routed nor translated, and br_netfilter (which Docker loads)
//     would pass them through the IP hooks and conntrack, at a tenth of
//     their throughput.
//
// # Lifecycle
//
// Create and Attach check their input before touching the kernel and undo
// what they made when a later step fails. Member.Close and Network.Close
// undo exactly what was made and return only when nothing of it is left:
// the pairs deleted and unlisted (nl.DeleteLinks), the connection tracking
// entries of the members' addresses forgotten (marked ones, and the
// host's own with them, such as DNS queries to the gateway), the
// anti-spoofing entries removed, the resolv.conf files removed, and for
// the network its nat.Rules closed (forwarding off first), the bridge
// deleted and, when no network of any process is left, the bridge table.
// The process may exit the moment Close returns.
//
// A process killed with networks leaves them marked with its owner ID:
// nat.Sweep (of any process, "nsnet sweep") removes the bridges and pairs,
// both tables' entries, the resolv.conf files and the host's connections
// with the dead prefixes, and the bridge table when it is empty.
//
// A firewall reload ("nft flush ruleset") removes both tables: nat's guard
// makes its table again (within 20 ms), and this package's guard, one
// goroutine per host namespace with networks, looks every 50 ms and makes
// the bridge table again with the entries of the process's live members.
//
// nat's table is shared by every nsnet process of the host and made by the
// first of them: one made by an older nsnet, without the rules networks
// need, is refused by Create (ErrStaleTable) rather than used.
//
// # Locks and goroutines
//
// A Network's state has one mutex (its members, the addresses and names
// taken, closed), and one for its rtnetlink socket; a member's mutex
// (closed, and Publish, Unpublish and Close of that member) is taken
// before the network's, never after. The guards' registry has a mutex of
// its own, taken before a network's. Goroutines: per network, the name
// server's two listeners per gateway address, one per UDP query passed on
// and one per TCP connection (all bounded, all stopped by Close); per
// host namespace with networks, the guard.
//
// # Limits
//
// Members have no IPv6 link-local address (their addresses are the
// network's; multicast listener reports go from the unspecified address).
// The bridge table's guard leaves a window of up to 50 ms after a flush
// in which members' frames are not checked. A network lives in the
// process that made it: there is no persistent network. A bridge takes at
// most 1,023 ports (the kernel's limit), so a network at most 1,023
// members. On a kernel before Linux 6.17 (no per-interface IPv6
// forwarding) an IPv6 prefix needs net.ipv6.conf.all.forwarding on
// already, as nat.AddRules does.
package network
