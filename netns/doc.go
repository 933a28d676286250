// Package netns creates, opens, lists and deletes Linux network namespaces
// and runs code and commands inside them, without starting a process: it is
// the ip-netns(8) equivalent.
//
// # Handles
//
// A [Handle] owns one open file descriptor of a network namespace (an nsfs
// file). The namespace lives as long as any handle, bind mount, process or
// socket refers to it. Every function of nsnet that acts in a namespace takes
// a *Handle; a nil *Handle means the caller's current namespace (the one the
// calling thread is in, which for an ordinary Go program is the namespace
// the process started in).
//
// # Named namespaces
//
// [New] makes a named namespace exactly as "ip netns add NAME" does: an
// empty file /run/netns/NAME onto which the namespace is bind-mounted, with
// /run/netns made a shared mount point first, so that "ip netns list",
// "ip netns exec NAME ..." and "ip -n NAME ..." see it, and a namespace made
// by ip(8) can be opened with [Open]. [Delete] undoes it like "ip netns del".
//
// # Threads
//
// Namespaces are per OS thread. No function of this package moves the
// calling goroutine's thread. [New], [NewAnonymous], [Handle.Do] and
// [Handle.Start] do their work on a fresh goroutine locked to its own
// thread, switch that thread back when done and unlock it; if switching back
// fails the goroutine exits still locked, so the Go runtime discards the
// thread instead of reusing it in the wrong namespace.
//
// # Privileges
//
// Creating a namespace needs CAP_SYS_ADMIN (unshare and mount); entering one
// needs CAP_SYS_ADMIN too. Opening and listing need only read access.
//
// # Errors
//
// Errors wrap the underlying syscall.Errno, so errors.Is(err, os.ErrExist),
// os.ErrNotExist and os.ErrPermission work. Invalid names are rejected with
// [ErrInvalidName] before anything is created. A closed handle gives
// [ErrClosed].
package netns
