// Package veth creates veth pairs and operates on links of any kind: list,
// look up, set up or down, move to another namespace, delete. It is the
// "ip link" equivalent, over rtnetlink and without a process.
//
// # Create in place
//
// [Create] makes the pair in one RTM_NEWLINK with the peer created directly
// inside its namespace, optionally already up: no create-then-move, which
// would cost an RCU grace period and bring the moved link down again.
//
// # Any link kind
//
// [List], [Lookup], [SetUp], [SetDown], [Move] and [Delete] work on every
// link kind (veth, bridge, macvlan, vxlan, lo, physical NICs), not only on
// veth links. [Move] behaves as the kernel makes it: the moved link arrives
// down and without addresses, and since interface indexes are per
// namespace, look it up again by name in the target namespace.
//
// # Namespaces
//
// Every function takes the namespace it acts in as a *netns.Handle; nil is
// the caller's current namespace. The calling thread never changes
// namespace: the netlink socket is opened inside the target one.
//
// # Errors
//
// [Create] makes the peer directly inside its namespace in the same message
// (no create-and-move, which costs an RCU grace period and resets the
// link). [CreateBridge] and [SetMaster] make a Linux bridge and its
// ports. The generic link operations (up, down, move, delete, lookup,
// list) work on links of any kind, and [Format] prints a listing as
// "ip link show" does.
//
// Interface names are checked before the kernel sees them (1 to 15 bytes,
// no '/', ':', '%' (the kernel reads it as a template), white space, control
// characters or the byte 0xA0, not "." or ".."); a bad one gives an error
// matching [ErrInvalidName]. A missing link matches os.ErrNotExist (the
// kernel's ENODEV), an existing name os.ErrExist, a lack of CAP_NET_ADMIN
// os.ErrPermission. Errors name the package, the operation and the link, and
// keep the kernel's extended acknowledgement text when it sends one.
//
// All functions are safe for concurrent use. Acting in another namespace
// than the caller's (a non-nil handle) opens a socket inside it, which
// needs CAP_SYS_ADMIN, for List and Lookup too.
package veth
