// Package owner is nsnet's protocol between processes that share a host
// network namespace: who owns what the library made there, whether that
// owner still runs, and the host lock under which they take turns.
//
// # Owners
//
// Each process draws a random owner ID at start (ID). While it has links
// in a host network namespace it holds a unix socket bound there to the
// abstract name "@nsnet-owner-ID" (BindSelf). Abstract names belong to a
// network namespace, not to a PID namespace, and the kernel frees one when
// its process exits, however it exits (SIGKILL included). So any process
// in the host namespace tells a live owner from a dead one by trying to
// bind that name (Live): EADDRINUSE means alive. Pid numbers, which repeat
// across PID namespaces and are reused, play no part in it.
//
// # Marks
//
// Everything the library makes carries a Mark, "nsnet owner=ID pid=P" and
// more fields (the host veth's ifalias, every set entry's comment, the
// first line of a resolv.conf, a DOCKER-USER rule's comment); the pid is
// for people. Mark.String and Parse are the one place it is written and
// read: processes of other nsnet versions read it too, so its fields keep
// their order.
//
// # The host lock
//
// WithHostLock runs a read-decide-write sequence (an uplink's forwarding
// shared between processes, a Sweep) while the process holds the abstract
// name "@nsnet-lock" in the host namespace: one socket at a time can bind
// it, and the kernel frees it when its holder dies.
//
// Persistent links (nat.Config.Persistent) belong to the persistent owner,
// Persistent, which no process holds and Live takes for live.
package owner
