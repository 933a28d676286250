package dns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
)

// Owner makes one of a DNS server's connections to the host's resolver
// the link's (see flows.Own), once its first packet is sent: host is the
// server's handle to the host namespace, proto the connection's IP
// protocol, local and remote its ends. Without it, the connections would
// outlive the link's Close in the host's connection tracking table, as
// nothing else marks them (loopback, or the host's own uplink, is no
// link's). A server stops only after its last call returns, so a Close
// that stops the server before its flush by mark forgets them all.
type Owner func(host *netns.Handle, proto uint8, local, remote netip.AddrPort)

// Conns are a DNS server's open connections, to its clients and to the
// host's resolver: those to the resolver are made from the host namespace
// and told to the Owner, and all are closed when the server stops. Safe
// for concurrent use; its lock is taken alone.
type Conns struct {
	host    *netns.Handle
	own     Owner // nil: none
	mu      sync.Mutex
	open    map[net.Conn]bool
	closing bool
}

// NewConns returns the connections of a server in host (a handle that
// outlives them).
func NewConns(host *netns.Handle, own Owner) *Conns {
	return &Conns{host: host, own: own, open: map[net.Conn]bool{}}
}

// Track adds c, a client's connection; it fails once the server is
// stopping (the caller closes c).
func (cs *Conns) Track(c net.Conn) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closing {
		return false
	}
	cs.open[c] = true
	return true
}

// Release closes c and forgets it.
func (cs *Conns) Release(c net.Conn) {
	cs.mu.Lock()
	delete(cs.open, c)
	cs.mu.Unlock()
	c.Close()
}

// Close closes every connection, and Track fails from now on. TCP ones
// are reset, not closed: a closed one would go on with its peer after
// Close returns (the resolver's FIN, the last ACK), and such a packet,
// once the link's Close has forgotten the connection, would be taken up
// by conntrack as a new connection that nobody forgets.
func (cs *Conns) Close() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.closing = true
	for c := range cs.open {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
}

// Dial opens a TCP connection to the resolver at upstream, tracked (give
// it back with Release), and tells the Owner of it: its handshake is done.
func (cs *Conns) Dial(upstream netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	c, err := cs.dial("tcp", upstream, timeout)
	if err == nil {
		cs.owned(c)
	}
	return c, err
}

// Exchange passes a query to the resolver at upstream over UDP, or over
// TCP (RFC 7766: the message after its two-byte length), and hands its
// answer to reply; then it tells the Owner of the connection, so that the
// client does not wait for that.
func (cs *Conns) Exchange(network string, upstream netip.AddrPort, q []byte, timeout time.Duration, reply func([]byte)) error {
	c, err := cs.dial(network, upstream, timeout)
	if err != nil {
		return err
	}
	defer cs.Release(c)
	defer cs.owned(c) // even if the write failed: it may have sent it
	c.SetDeadline(time.Now().Add(timeout))
	var a []byte
	if network == "tcp" {
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
			return err
		}
		if a, err = ReadMsg(c); err != nil {
			return err
		}
	} else {
		if _, err := c.Write(q); err != nil {
			return err
		}
		a = make([]byte, 65535)
		n, err := c.Read(a)
		if err != nil {
			return err
		}
		a = a[:n]
	}
	reply(a)
	return nil
}

// ErrDial is the error of Dial and Exchange when no connection to the
// resolver could be made (its cause joined to it).
var ErrDial = errors.New("dns: no connection to the resolver")

// dial opens a connection to upstream from the host namespace, tracked.
func (cs *Conns) dial(network string, upstream netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := nl.Do(cs.host, func() (err error) {
		c, err = net.DialTimeout(network, upstream.String(), timeout)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDial, err)
	}
	if !cs.Track(c) {
		c.Close()
		return nil, net.ErrClosed
	}
	return c, nil
}

// owned tells the Owner of c, a connection to the resolver.
func (cs *Conns) owned(c net.Conn) {
	if cs.own == nil {
		return
	}
	switch a := c.LocalAddr().(type) {
	case *net.UDPAddr:
		cs.own(cs.host, syscall.IPPROTO_UDP, a.AddrPort(), c.RemoteAddr().(*net.UDPAddr).AddrPort())
	case *net.TCPAddr:
		cs.own(cs.host, syscall.IPPROTO_TCP, a.AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort())
	}
}

// ReadMsg reads one DNS message of a TCP connection: its two-byte length,
// then the message.
func ReadMsg(r io.Reader) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(n[:]))
	_, err := io.ReadFull(r, b)
	return b, err
}
