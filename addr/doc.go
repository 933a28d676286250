// Package addr adds, replaces, deletes and lists the IPv4 and IPv6
// addresses of a link: the "ip address" equivalent, over rtnetlink.
//
// Addresses are netip.Prefix values: the address with its prefix length, as
// "ip address add 10.0.0.1/24" takes it. IPv4 addresses get a broadcast
// address, as "ip address add ... brd +" gives them (the last address of
// the prefix; none for /31 and /32, RFC 3021). IPv6 addresses go through duplicate address detection unless
// [Config.NoDAD] is set; [WaitReady] waits until one is usable.
//
// Every function takes the namespace it acts in (nil: the caller's current
// one) and the link by name. Names and prefixes are checked before the
// kernel sees them: a bad one matches [ErrInvalidName] or [ErrInvalidPrefix]
// and changes nothing. A missing link or address matches os.ErrNotExist
// (ENODEV, EADDRNOTAVAIL), a duplicate os.ErrExist. All functions are safe
// for concurrent use and need CAP_NET_ADMIN, except List, which needs no
// privilege in the caller's own namespace (nil); acting in another
// namespace (opening a socket inside it) needs CAP_SYS_ADMIN as well.
//
// Listings are netlink-filtered (one link's addresses) and consistent, or
// fail with [ErrInterrupted] (try again): a dump the kernel flags as
// interrupted is read again, and one link's addresses are read until two
// reads agree (a dump loses its place when addresses before it go,
// silently leaving out others).
package addr
