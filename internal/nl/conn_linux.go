package nl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nsthread"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// Conn is a route netlink socket opened inside one namespace. It is not safe
// for concurrent use: each operation dials its own, or owns one for its
// whole duration.
type Conn struct {
	c *netlink.Conn
}

// Dial opens a route netlink socket inside ns (nil: the caller's current
// namespace) without moving the caller's thread: the socket is created on a
// locked helper thread and keeps its namespace for life. Extended
// acknowledgements are on, so kernel error messages reach the caller, and
// strict checking, so dumps can be filtered in the kernel.
func Dial(ns *netns.Handle) (*Conn, error) {
	cfg, err := Config(ns)
	if err != nil {
		return nil, err
	}
	cfg.Strict = true
	c, err := netlink.Dial(unix.NETLINK_ROUTE, cfg)
	runtime.KeepAlive(ns) // its fd was in use until here (see netns.Handle.Fd)
	if err != nil {
		return nil, fmt.Errorf("dial rtnetlink in %s: %w", ns, err)
	}
	return &Conn{c: c}, nil
}

// Close closes the socket.
func (c *Conn) Close() error { return c.c.Close() }

// Config is the netlink configuration that opens a socket inside ns (nil:
// the caller's current namespace); a closed handle is an error.
func Config(ns *netns.Handle) (*netlink.Config, error) {
	cfg := &netlink.Config{}
	if ns != nil {
		fd, err := NSFd(ns)
		if err != nil {
			return nil, err
		}
		cfg.NetNS = fd
	}
	return cfg, nil
}

// Request is one rtnetlink request: a message type, flags beyond
// NLM_F_REQUEST, and the marshalled body.
type Request struct {
	Type  uint16
	Flags netlink.HeaderFlags
	Data  []byte
}

func (r Request) isDump() bool { return r.Flags&netlink.Dump == netlink.Dump }

// Do sends all requests in one sendmsg and collects, for each, its reply
// messages and its error. The kernel handles the requests in order and goes
// on after a failure, so a batch must only hold requests that are each fine
// on their own; callers use the per-request errors to know what took effect.
//
// A dump may only be the last request of a batch: the kernel answers the
// requests after a dump while the dump is still being read, so their
// replies would interleave with its parts.
//
// Every non-dump request is sent with NLM_F_ACK, so each one ends with
// exactly one acknowledgement or error, and a dump ends with NLMSG_DONE:
// that is how replies are matched to requests without trusting sequence
// numbers across datagrams.
func (c *Conn) Do(reqs ...Request) (replies [][]netlink.Message, errs []error, err error) {
	for i, r := range reqs {
		if r.isDump() && i != len(reqs)-1 {
			return nil, nil, errors.New("nl: a dump must be the last request of a batch")
		}
	}
	replies = make([][]netlink.Message, len(reqs))
	errs = make([]error, len(reqs))
	// Chunks small enough that their acknowledgements fit the socket's
	// receive buffer: past it the kernel drops them (ENOBUFS), and the
	// count that pairs replies with requests would be lost.
	const chunk = 64
	for lo := 0; lo < len(reqs); lo += chunk {
		hi := min(lo+chunk, len(reqs))
		if err := c.do(reqs[lo:hi], replies[lo:hi], errs[lo:hi]); err != nil {
			return replies, errs, err
		}
	}
	return replies, errs, nil
}

func (c *Conn) do(reqs []Request, replies [][]netlink.Message, errs []error) error {
	msgs := make([]netlink.Message, len(reqs))
	for i, r := range reqs {
		flags := netlink.Request | r.Flags
		if !r.isDump() {
			flags |= netlink.Acknowledge
		}
		msgs[i] = netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(r.Type), Flags: flags}, Data: r.Data}
	}
	var err error
	if len(msgs) == 1 {
		_, err = c.c.Send(msgs[0])
	} else {
		_, err = c.c.SendMessages(msgs)
	}
	if err != nil {
		return Wrap(err)
	}
	for i := 0; i < len(reqs); {
		got, rerr := c.c.Receive()
		if rerr != nil {
			// A request's error is a bare errno from an NLMSG_ERROR; a
			// failed recvmsg (ENOBUFS: replies lost) is a SyscallError.
			var oe *netlink.OpError
			var se *os.SyscallError
			if errors.As(rerr, &se) || !errors.As(rerr, &oe) || !isErrno(oe.Err) {
				return Wrap(rerr) // the socket itself failed
			}
			errs[i] = Wrap(rerr)
			i++
			continue
		}
		if reqs[i].isDump() {
			replies[i] = got // Receive gathers a multi-part dump up to DONE
			i++
			continue
		}
		for _, m := range got {
			if m.Header.Type == netlink.Error {
				i++ // the acknowledgement that ends request i
				continue
			}
			if i < len(reqs) {
				replies[i] = append(replies[i], m)
			}
		}
	}
	return nil
}

func isErrno(err error) bool {
	var errno unix.Errno
	return errors.As(err, &errno)
}

// Exec sends the requests as one batch and returns the socket's error if
// the batch failed as a whole, or else the requests' errors joined (nil if
// every one succeeded).
func (c *Conn) Exec(reqs ...Request) error {
	_, errs, err := c.Do(reqs...)
	if err != nil {
		return err
	}
	return errors.Join(errs...)
}

// Query sends one request and returns its replies.
func (c *Conn) Query(r Request) ([]netlink.Message, error) {
	replies, errs, err := c.Do(r)
	if err != nil {
		return nil, err
	}
	return replies[0], errs[0]
}

// Interrupted reports whether the kernel flagged a dump as interrupted by
// a change between two of its parts (NLM_F_DUMP_INTR): what it returned
// may lack entries that were there all along.
func Interrupted(msgs []netlink.Message) bool {
	for _, m := range msgs {
		if m.Header.Flags&netlink.DumpInterrupted != 0 {
			return true
		}
	}
	return false
}

// Dump sends a dump request and returns its messages, reading it again
// while the kernel flags it as interrupted (see Retrying; then the error
// matches ErrInterrupted).
func (c *Conn) Dump(r Request) ([]netlink.Message, error) {
	var msgs []netlink.Message
	err := Retrying(func() (err error) {
		msgs, err = c.Query(r)
		if err == nil && Interrupted(msgs) {
			msgs, err = nil, ErrInterrupted
		}
		return err
	})
	return msgs, err
}

// RetryBudget bounds how long Retrying reads a listing again.
var RetryBudget = 2 * time.Second

// Retrying calls read until its error is not ErrInterrupted: three times at
// once, then after pauses that grow from 100 us to 10 ms, each drawn at
// random around its length (so that a reader whose every read overlapped
// a periodic change falls out of step with it), for up to RetryBudget.
// Under heavy churn (hundreds of routes added and deleted in a loop beside
// a stable set) a dump is interrupted in about one read of three: eight
// reads in a row, the old limit, failed 2-30 % of lists.
func Retrying(read func() error) error {
	deadline := time.Now().Add(RetryBudget)
	pause := 100 * time.Microsecond
	for attempt := 0; ; attempt++ {
		err := read()
		if !errors.Is(err, ErrInterrupted) || time.Now().After(deadline) {
			return err
		}
		if attempt >= 2 {
			time.Sleep(pause/2 + rand.N(pause))
			pause = min(2*pause, 10*time.Millisecond)
		}
	}
}

// NativeEndian is the byte order of rtnetlink's fixed headers.
var NativeEndian = binary.NativeEndian

// DupHandle opens a handle of the caller's own to h's namespace (a
// second descriptor: closing either leaves the other open).
func DupHandle(h *netns.Handle) (*netns.Handle, error) {
	fd, err := NSFd(h)
	if err != nil {
		return nil, err
	}
	return netns.OpenPath(fmt.Sprintf("/proc/thread-self/fd/%d", fd))
}

// NSFd returns ns's file descriptor, or an error matching netns.ErrClosed
// if ns is closed.
func NSFd(ns *netns.Handle) (int, error) {
	fd := ns.Fd()
	if fd < 0 {
		return -1, fmt.Errorf("netns: %s: %w", ns, netns.ErrClosed)
	}
	return fd, nil
}

// Do runs fn on a thread inside ns (in the caller's namespace for nil), as
// netns.Handle.Do does, but without its check of the thread's other
// namespaces afterwards (about 30 us): for the library's own functions,
// which change none.
func Do(ns *netns.Handle, fn func() error) error {
	if ns == nil {
		return fn()
	}
	fd, err := NSFd(ns)
	if err != nil {
		return err
	}
	defer runtime.KeepAlive(ns)
	return nsthread.Run(func() error {
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return NeedPriv(fmt.Errorf("netns: enter %s: %w", ns, err), "CAP_SYS_ADMIN")
		}
		return nil
	}, fn, false)
}
