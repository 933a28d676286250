// Package sweep removes what nsnet left in a host network namespace from
// the kernel's record of it alone, with no process state: everything of
// owners no longer alive (nat.Sweep: links, resolv.conf files, DOCKER-USER
// rules, set entries, connections, the uplink forwarding they turned on,
// the table when it is empty), and one persistent link's entries with the
// persistent owner's share of its uplink (nat.Remove). It has no state of
// its own; the set entries and the uplinks' forwarding change under the
// host lock.
package sweep
