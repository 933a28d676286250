package dns

// The DNS relay (DNSRelay): a UDP and a TCP listener on the link's host
// address, port 53, in the host namespace, passing each query from the
// link's prefix to the host's resolver on loopback and its answer back,
// as Docker's embedded DNS and podman's aardvark-dns do for their
// networks. It lives in the process that made the link, until Close.

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
)

// What a namespace can take from the process that relays for it: code in
// the namespace is not trusted (a CI job, a container), so every cost of
// its traffic here is bounded, per link and for all links together, and
// what exceeds a bound is refused (a UDP query dropped, a TCP connection
// closed at once), never queued. A TCP connection costs two descriptors
// (client and resolver) and three goroutines; a UDP query in flight one
// descriptor, one goroutine and a 64 KiB buffer.
const (
	relayTimeout = 5 * time.Second  // for an answer over UDP
	relayIdle    = 10 * time.Second // a TCP connection with nothing to say (RFC 7766 suggests seconds)
	relayWorkers = 64               // UDP queries in flight, per link
	relayTCPLink = 16               // TCP connections, per link
	relayTCPPeer = 8                // TCP connections, per client address
)

// For all links of the process together: at most 1,024 descriptors (and a
// bounded number of goroutines), whatever the number of links and however
// they are flooded; the process's own calls keep the rest of its limit.
var (
	relayUDPAll = make(chan struct{}, 512)
	relayTCPAll = make(chan struct{}, 256)
)

type relay struct {
	host     *netns.Handle
	upstream netip.AddrPort
	clients  netip.Prefix
	udp      *net.UDPConn
	tcp      *net.TCPListener
	conns    *Conns // open connections (TCP, and UDP to the resolver), closed with the relay
	slots    chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	tcpPeers map[netip.Addr]int // TCP connections per client address
	tcpN     int                // TCP connections of this link
}

// startRelay listens on listen:53 in host and relays to upstream:53; own,
// if set, is told of each connection to the resolver (see Owner).
func startRelay(host *netns.Handle, listen, upstream netip.Addr, clients netip.Prefix, own Owner) (*relay, error) {
	host, err := nl.DupHandle(host) // its own: it outlives the caller's
	if err != nil {
		return nil, err
	}
	r := &relay{host: host, upstream: netip.AddrPortFrom(upstream, 53), clients: clients, conns: NewConns(host, own),
		slots: make(chan struct{}, relayWorkers), tcpPeers: map[netip.Addr]int{}}
	at := netip.AddrPortFrom(listen, 53)
	err = nl.Do(host, func() (err error) {
		if r.udp, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(at)); err != nil {
			return err
		}
		r.tcp, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(at))
		return err
	})
	if err != nil {
		if r.udp != nil {
			r.udp.Close()
		}
		host.Close()
		return nil, err
	}
	r.wg.Add(2)
	go r.serveUDP()
	go r.serveTCP()
	return r, nil
}

// close stops the relay and waits for its goroutines (see Conns.Close).
func (r *relay) close() {
	r.udp.Close()
	r.tcp.Close()
	r.conns.Close()
	r.wg.Wait()
	r.host.Close()
}

func (r *relay) serveUDP() {
	defer r.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := r.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !r.clients.Contains(from.Addr().Unmap()) {
			continue
		}
		select {
		case r.slots <- struct{}{}:
		default:
			continue // too many in flight: the client retries
		}
		select {
		case relayUDPAll <- struct{}{}:
		default:
			<-r.slots
			continue // too many for all links together
		}
		q := append([]byte(nil), buf[:n]...)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer func() { <-r.slots; <-relayUDPAll }()
			r.answerUDP(q, from)
		}()
	}
}

func (r *relay) answerUDP(q []byte, from netip.AddrPort) {
	r.conns.Exchange("udp", r.upstream, q, relayTimeout, func(a []byte) { r.udp.WriteToUDPAddrPort(a, from) })
}

func (r *relay) serveTCP() {
	defer r.wg.Done()
	for {
		c, err := r.tcp.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		peer := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		if !r.clients.Contains(peer) || !r.admitTCP(peer) {
			c.Close() // refused: not a client, or over a bound
			continue
		}
		if !r.conns.Track(c) {
			r.leaveTCP(peer)
			c.Close()
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer r.leaveTCP(peer)
			defer r.conns.Release(c)
			r.pipeTCP(c)
		}()
	}
}

// admitTCP counts a new TCP connection from peer in, unless that would
// pass a bound (the peer's, the link's, all links'); leaveTCP counts it
// out.
func (r *relay) admitTCP(peer netip.Addr) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tcpPeers[peer] >= relayTCPPeer || r.tcpN >= relayTCPLink {
		return false
	}
	select {
	case relayTCPAll <- struct{}{}:
	default:
		return false
	}
	r.tcpPeers[peer]++
	r.tcpN++
	return true
}

func (r *relay) leaveTCP(peer netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tcpPeers[peer]--; r.tcpPeers[peer] == 0 {
		delete(r.tcpPeers, peer)
	}
	r.tcpN--
	<-relayTCPAll
}

// pipeTCP copies both ways between a client and the resolver until one
// side closes or both are idle for relayIdle.
func (r *relay) pipeTCP(c *net.TCPConn) {
	up, err := r.conns.Dial(r.upstream, relayTimeout)
	if err != nil {
		return
	}
	defer r.conns.Release(up)
	done := make(chan struct{}, 2)
	copyIdle := func(dst, src net.Conn) {
		buf := make([]byte, 4096)
		for {
			src.SetReadDeadline(time.Now().Add(relayIdle))
			n, err := src.Read(buf)
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				if err == io.EOF {
					if tc, ok := dst.(*net.TCPConn); ok {
						tc.CloseWrite()
					}
				}
				break
			}
		}
		done <- struct{}{}
	}
	go copyIdle(up, c)
	copyIdle(c, up)
	<-done
}
