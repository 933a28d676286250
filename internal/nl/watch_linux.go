package nl

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// Watch is a route netlink socket subscribed to multicast notifications,
// read without blocking: it lets a caller keep a copy of kernel state up to
// date at the cost of the changes since the last look, instead of dumping
// everything every time.
type Watch struct {
	c   *netlink.Conn
	buf []byte
}

// ErrOverflow is returned by Poll when the kernel dropped notifications
// because the socket's buffer was full (ENOBUFS): the copy must be rebuilt
// from a dump.
var ErrOverflow = errors.New("netlink notifications overflowed")

// DialWatch opens a socket in ns subscribed to the rtnetlink groups.
func DialWatch(ns *netns.Handle, groups ...uint32) (*Watch, error) {
	return DialWatchFamily(ns, unix.NETLINK_ROUTE, groups...)
}

// DialWatchFamily opens a socket of the netlink family (NETLINK_ROUTE,
// NETLINK_NETFILTER) in ns subscribed to the groups.
func DialWatchFamily(ns *netns.Handle, family int, groups ...uint32) (*Watch, error) {
	cfg, err := Config(ns)
	if err != nil {
		return nil, err
	}
	c, err := netlink.Dial(family, cfg)
	runtime.KeepAlive(ns)
	if err != nil {
		return nil, fmt.Errorf("dial netlink watch in %s: %w", ns, err)
	}
	for _, g := range groups {
		if err := c.JoinGroup(g); err != nil {
			c.Close()
			return nil, fmt.Errorf("join netlink group %d: %w", g, err)
		}
	}
	// Room for bursts (a thousand route changes) between two polls.
	_ = c.SetReadBuffer(4 << 20)
	return &Watch{c: c, buf: make([]byte, 64<<10)}, nil
}

// Close closes the socket.
func (w *Watch) Close() error { return w.c.Close() }

// Poll hands every notification queued (its type, header flags and
// body) on the socket to fn and returns
// when none is left, without waiting. ErrOverflow means some were lost.
func (w *Watch) Poll(fn func(typ, flags uint16, body []byte)) error {
	rc, err := w.c.SyscallConn()
	if err != nil {
		return err
	}
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), w.buf, unix.MSG_DONTWAIT)
			return true // never park: EAGAIN means drained
		})
		if err != nil {
			return err
		}
		switch {
		case rerr == unix.EAGAIN:
			return nil
		case rerr == unix.ENOBUFS:
			return ErrOverflow
		case rerr != nil:
			return rerr
		}
		if err := eachMessage(w.buf[:n], fn); err != nil {
			return err
		}
	}
}

// Wait blocks until a notification is queued on the socket (or the kernel
// dropped some: ENOBUFS), without reading it, or until Interrupt is called:
// then it returns an error matching os.ErrDeadlineExceeded.
func (w *Watch) Wait() error {
	rc, err := w.c.SyscallConn()
	if err != nil {
		return err
	}
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		_, _, rerr = unix.Recvfrom(int(fd), w.buf[:1], unix.MSG_DONTWAIT|unix.MSG_PEEK)
		return rerr != unix.EAGAIN // EAGAIN: park until readable
	})
	if err != nil {
		return err
	}
	if rerr == unix.ENOBUFS {
		return nil // some were lost: something happened
	}
	return rerr
}

// Interrupt makes a Wait, current or later, return at once.
func (w *Watch) Interrupt() { w.c.SetReadDeadline(time.Unix(1, 0)) }

// DumpUnchanged dumps r on c (a connection in ns) while watching the
// groups for notifications, and reads it again while any came in during
// the read (see Retrying; then the error matches ErrInterrupted). For
// dumps the kernel does not flag when they are interrupted (IPv6 routes,
// one link's addresses): a read during which nothing changed is
// consistent. whole, if not nil, looks at a read too: a change whose
// notification the kernel sends later (an IPv6 address's, from a work
// queue) can only be seen in the read itself.
func DumpUnchanged(ns *netns.Handle, c *Conn, r Request, whole func([]netlink.Message) bool, groups ...uint32) ([]netlink.Message, error) {
	w, err := DialWatch(ns, groups...)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	var msgs []netlink.Message
	err = Retrying(func() (err error) {
		// What came in before this read is no news about it.
		if err := w.Poll(func(uint16, uint16, []byte) {}); err != nil && !errors.Is(err, ErrOverflow) {
			return err
		}
		if msgs, err = c.Dump(r); err != nil {
			return err
		}
		changed := false
		err = w.Poll(func(uint16, uint16, []byte) { changed = true })
		switch {
		case errors.Is(err, ErrOverflow):
			changed = true
		case err != nil:
			return err
		}
		if changed || whole != nil && !whole(msgs) {
			msgs = nil
			return ErrInterrupted
		}
		return nil
	})
	return msgs, err
}

// eachMessage splits a datagram into netlink messages.
func eachMessage(b []byte, fn func(typ, flags uint16, body []byte)) error {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(NativeEndian.Uint32(b[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return fmt.Errorf("netlink message of %d bytes in a datagram of %d", l, len(b))
		}
		fn(NativeEndian.Uint16(b[4:6]), NativeEndian.Uint16(b[6:8]), b[unix.NLMSG_HDRLEN:l])
		l = (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if l > len(b) {
			break
		}
		b = b[l:]
	}
	return nil
}
