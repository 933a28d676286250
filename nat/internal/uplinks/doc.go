// Package uplinks shares an uplink's forwarding between the links, the
// processes and the persistent (CNI) links that use it, through the
// library's table alone.
//
// The uplinks set holds one entry per (uplink index, family, owner) using
// the uplink, commented with the owner's mark and the uplink's forwarding
// before the first of them ("orig=off" or "orig=on"). The first user in a
// process reads the uplink's entries, takes the original setting from a
// live one (or from the kernel when none is live), adds its own entry and
// turns forwarding on; the last user in a process removes its entry and,
// when no live user is left, restores the original. Each of these
// read-decide-write sequences runs under the host lock (owner.WithHostLock).
// Where an uplink forwarded a family for nsnet only, its entry in the
// opened set makes the forward chain drop everything else arriving there.
// On a kernel before 6.17 IPv6's share is of the global switch (Key{0,
// IPv6}), with records of what it changed (global_linux.go).
//
// [Shares] is one process's count of its links per uplink forwarding: one
// count, guarded by its mutex mu (a leaf in nat's lock order, never held
// across I/O). A share stays, registered, from its first link until the
// host lock's holder that finds it unused removes the process's entry: a
// Close waiting for the lock while a new Connect reuses the share leaves
// the entry and the forwarding to that Connect.
package uplinks
