package table

import (
	"net/netip"
	"runtime"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/flows"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/netns"
	"github.com/ti-mo/conntrack"
)

// Idle is a set of sockets no longer in use, to be closed: closing some of
// them waits (a netfilter socket closed after a commit that deleted
// something waits for an RCU grace period), so the caller chooses when.
type Idle struct {
	RT  []*nl.Conn
	NFT []*nftables.Conn
	Raw []*netlink.Conn
	CT  []*conntrack.Conn
}

// NFTConn and RawConn return one of i's sockets, dialling one (kept in i,
// to be closed with the rest) if there is none.
func (i *Idle) NFTConn(host *netns.Handle) (*nftables.Conn, error) {
	return firstOrDial(&i.NFT, func() (*nftables.Conn, error) { return NFTConn(host) })
}

// RawConn: see NFTConn.
func (i *Idle) RawConn(host *netns.Handle) (*netlink.Conn, error) {
	return firstOrDial(&i.Raw, func() (*netlink.Conn, error) { return nftset.DialNFT(host) })
}

func firstOrDial[C any](pool *[]C, dial func() (C, error)) (C, error) {
	if len(*pool) == 0 {
		c, err := dial()
		if err != nil {
			return c, err
		}
		*pool = append(*pool, c)
	}
	return (*pool)[0], nil
}

// Close closes the sockets.
func (i Idle) Close() {
	for _, c := range i.RT {
		c.Close()
	}
	for _, c := range i.NFT {
		c.CloseLasting()
	}
	for _, c := range i.Raw {
		c.Close()
	}
	for _, c := range i.CT {
		c.Close()
	}
}

// Open makes t keep idle sockets for later (after Drain stopped it).
func (t *Host) Open() {
	t.mu.Lock()
	t.keep = true
	t.mu.Unlock()
}

// Drain hands over t's idle sockets and makes it close the ones put back
// from now on (until Open), and forgets the table's state: the process
// has no link left in the host.
func (t *Host) Drain() Idle {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := Idle{RT: t.idle.RT, NFT: t.idle.NFT, Raw: t.idle.Raw, CT: t.idle.CT}
	t.idle = Idle{}
	t.keep, t.ready = false, false
	return i
}

// take takes the last idle socket of pool, a pool of t.
func take[C any](t *Host, pool *[]C) (c C, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := len(*pool); n > 0 {
		c, *pool = (*pool)[n-1], (*pool)[:n-1]
		return c, true
	}
	return c, false
}

// put keeps c for later while t keeps sockets, unless the operation on it
// failed (a failed socket may hold stale replies) or enough are kept.
func put[C any](t *Host, pool *[]C, c C, failed bool, closeFn func(C)) {
	t.mu.Lock()
	if !failed && t.keep && len(*pool) < 4 {
		*pool = append(*pool, c)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	closeFn(c)
}

// Conn returns an idle rtnetlink socket of the host, or dials one.
func (t *Host) Conn(host *netns.Handle) (*nl.Conn, error) {
	if c, ok := take(t, &t.idle.RT); ok {
		return c, nil
	}
	return nl.Dial(host)
}

// PutConn gives back a socket from Conn.
func (t *Host) PutConn(c *nl.Conn) {
	put(t, &t.idle.RT, c, false, func(c *nl.Conn) { c.Close() })
}

// WithNFT runs fn with an idle google/nftables connection (for the
// skeleton and for reading sets). A google/nftables Conn that failed to
// serialise a message stays failed, so one that saw an error is closed.
func (t *Host) WithNFT(host *netns.Handle, fn func(*nftables.Conn) error) error {
	return withIdle(t, &t.idle.NFT, func() (*nftables.Conn, error) { return NFTConn(host) },
		func(c *nftables.Conn) { c.CloseLasting() }, fn)
}

// WithConntrack runs fn with an idle conntrack socket (see flows.Forget:
// closing one can wait for a grace period).
func (t *Host) WithConntrack(host *netns.Handle, fn func(*conntrack.Conn) error) error {
	return withIdle(t, &t.idle.CT, func() (*conntrack.Conn, error) { return flows.Dial(host) },
		func(c *conntrack.Conn) { c.Close() }, fn)
}

// withRaw runs fn with an idle raw nftables socket.
func (t *Host) withRaw(host *netns.Handle, fn func(*netlink.Conn) error) error {
	return withIdle(t, &t.idle.Raw, func() (*netlink.Conn, error) { return nftset.DialNFT(host) },
		func(c *netlink.Conn) { c.Close() }, fn)
}

// withIdle runs fn with an idle socket of pool, a pool of t, dialling one
// if there is none, and keeps it for later unless fn failed (see put).
func withIdle[C any](t *Host, pool *[]C, dial func() (C, error), closeFn func(C), fn func(C) error) error {
	c, ok := take(t, pool)
	if !ok {
		var err error
		if c, err = dial(); err != nil {
			return err
		}
	}
	err := fn(c)
	put(t, pool, c, err != nil, closeFn)
	return err
}

// FlowOwner returns what marks a connection of the link's DNS relay as
// the link's (see flows.Own and dns.Owner). Marks are made one at a time,
// so that a relay flooded by its namespace uses one idle socket, not one
// per query: a socket beyond the idle ones would be dialled, and closed,
// which can wait for a grace period.
func (t *Host) FlowOwner(link int) func(host *netns.Handle, proto uint8, local, remote netip.AddrPort) {
	return func(host *netns.Handle, proto uint8, local, remote netip.AddrPort) {
		t.ownMu.Lock()
		defer t.ownMu.Unlock()
		t.WithConntrack(host, func(c *conntrack.Conn) error { return flows.Own(c, proto, local, remote, link) })
	}
}

// Commit commits b on an idle raw nftables socket of the host.
func (t *Host) Commit(host *netns.Handle, b *nftset.Batch) error {
	return t.withRaw(host, b.Commit)
}

// NFTConn opens a lasting google/nftables connection in the host
// namespace, with a read buffer large enough for big set listings.
func NFTConn(host *netns.Handle) (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
		return c.SetReadBuffer(4 << 20)
	})}
	fd, err := nl.NSFd(host)
	if err != nil {
		return nil, err
	}
	c, err := nftables.New(append(opts, nftables.WithNetNSFd(fd))...)
	runtime.KeepAlive(host)
	return c, err
}
