// Package route adds, replaces, deletes and lists routes and asks the kernel
// which route it would use for a destination: the "ip route" equivalent,
// over rtnetlink.
//
// A [Route] names its destination as a netip.Prefix (the default route is
// 0.0.0.0/0 or ::/0; [AddDefault] is the shorthand for "ip route add default
// via GW"), an optional gateway, an optional output link by name or index,
// and optional source, metric, table, scope, protocol and type, whose zero
// values are the defaults of ip(8).
//
// Every function takes the namespace it acts in (nil: the caller's current
// one). Bad input matches [ErrInvalidRoute] (or ErrInvalidName for a link
// name) before the kernel sees it and changes nothing. A missing route
// matches os.ErrNotExist (ESRCH), a missing link os.ErrNotExist (ENODEV), a
// duplicate os.ErrExist; an unreachable gateway is the kernel's ENETUNREACH.
// All functions are safe for concurrent use; changes need CAP_NET_ADMIN.
//
// Listings are netlink-filtered (one table's routes) and consistent, or
// fail with [ErrInterrupted] (try again), as in package addr. Multipath
// routes list their NextHops; [Delete] with a zero Type matches any type,
// as "ip route del" does.
package route
