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
// [Handle.Do] runs on a separate locked OS thread that is switched back
// afterwards, or discarded by the runtime if it cannot be, so the
// caller's threads never change namespace whatever the function does there
// (returns, panics, calls runtime.Goexit as t.Fatal does, unlocks the
// thread, calls setns or unshare). Goroutines started inside Do do not
// inherit the namespace; sockets opened there keep it. A Handle never
// rests on fd 0-2 (mdlayher/netlink reads fd 0 as "the current
// namespace"), and one dropped without Close is closed by a cleanup.
//
// # Running commands
//
// [Handle.Start] and [Handle.Run] give a command what "ip netns exec"
// gives it: a mount namespace of its own in which the files of the
// namespace's [EtcDir] (/etc/netns/NAME, or /run/netns-etc/ID for an
// anonymous namespace) are bound over /etc's (its resolv.conf, which
// nat.Connect writes) and /sys is mounted afresh, so /sys/class/net shows
// the namespace's links. The caller's mounts never change, and the
// command's own SysProcAttr applies (Pdeathsig too: the thread that forks
// the child lives until the child exits).
//
// # Go networking in a namespace
//
// [Handle.Dial], [Handle.DialContext], [Handle.Listen] and
// [Handle.ListenPacket] make the socket inside the namespace (usable from
// any goroutine after), and [Handle.Resolver] asks the namespace's name
// servers from inside it. Code that dials on goroutines of its own
// (net/http) takes DialContext:
//
//	client := &http.Client{Transport: &http.Transport{DialContext: ns.DialContext}}
//	resp, err := client.Get("http://www.example.org/") // resolved and fetched from inside ns
//
// # Privileges
//
// Creating a namespace needs CAP_SYS_ADMIN (unshare and mount); entering one
// needs CAP_SYS_ADMIN too. Opening and listing need only read access. The
// capabilities count in the user namespace that owns the namespace acted
// on: a process that is root only in a user namespace of its own (a
// rootless container, unshare -Urnm, nstest without root) can make and
// enter network namespaces there, and name them where it can write
// /run/netns. Errors for missing privileges match os.ErrPermission and
// name the capability.
//
// # Errors
//
// Errors wrap the underlying syscall.Errno, so errors.Is(err, os.ErrExist),
// os.ErrNotExist and os.ErrPermission work. Invalid names are rejected with
// [ErrInvalidName] before anything is created. A closed handle gives
// [ErrClosed].
package netns
