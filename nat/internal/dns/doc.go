// Package dns gives a connected namespace its name resolution
// (nat.Config.DNS). Connect decides from the host's resolv.conf before it
// touches the kernel (Decide), then, once the link's host address exists,
// starts the relay if there is one and writes the namespace's resolv.conf
// into its netns.EtcDir (Start), with a first line naming the owner, so
// that Close (Setup.Stop) or, after a crash, Sweep removes exactly what was
// written.
//
// The relay (Relay, or Auto on a host whose only resolver listens on
// loopback, such as systemd-resolved's stub) is a UDP and a TCP listener
// on the link's host address, port 53, in the host namespace, passing each
// query from the link's prefix to the host's resolver and its answer back,
// as Docker's embedded DNS and podman's aardvark-dns do. It lives in the
// process that made the link, until Close: goroutines of its own (one
// per listener, one per query or connection in flight) with a mutex over
// its bounds. Its open connections (Conns, which a network's name server
// shares) have a mutex of their own; those to the resolver are marked as
// the link's (Owner), so that Close forgets them with its flows, and all
// are reset when it stops, so that no packet of theirs follows the flush.
package dns
