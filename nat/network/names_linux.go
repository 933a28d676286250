package network

// The network's name server: UDP and TCP on the gateway addresses, port
// 53, in the host namespace, in the process that made the network (as
// Docker's embedded DNS serves a user-defined network). It answers A and
// AAAA queries for the members' names (and aliases), bare or followed by
// one of the search domains written into the members' resolv.conf, and
// passes every other query to the host's first name server (from the
// host namespace, so a loopback resolver such as systemd-resolved's stub
// works) and its answer back. Code in the members is not trusted: queries
// in flight are bounded (a query over the bound is dropped, a connection
// over it closed), and only the network's own addresses are served.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/internal/resolv"
	"github.com/nsnet/nsnet/nat/internal/dns"
	"github.com/nsnet/nsnet/nat/internal/flows"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/net/dns/dnsmessage"
)

const (
	nameTimeout = 5 * time.Second  // for an answer from the host's resolver
	nameIdle    = 10 * time.Second // a TCP connection with nothing to say
	nameUDP     = 64               // UDP queries passed on at once
	nameTCP     = 16               // TCP connections at once
	nameTCPPeer = 4                // TCP connections at once from one member
	nameTTL     = 5                // seconds: members come and go
)

type nameServer struct {
	host      *netns.Handle
	lookup    func(name string) (*Member, bool)
	clients   []netip.Prefix
	search    []string       // lower-cased, with a trailing dot
	upstream  netip.AddrPort // the host's first name server (invalid: none), as of confStamp
	confStamp string         // the host resolv.conf's identity and size and time when upstream was read
	udp       []*net.UDPConn
	tcp       []*net.TCPListener
	udpSlots  chan struct{}
	tcpSlots  chan struct{}
	conns     *dns.Conns // open connections, closed with the server
	marker    *flows.Marker
	wg        sync.WaitGroup
	mu        sync.Mutex
	peers     map[netip.Addr]int // TCP connections per member
}

// startNameServer listens on the network's gateway addresses; its
// connections to the host's resolver carry mark (the bridge's index), so
// that the network's Close forgets them.
func startNameServer(host *netns.Handle, n *Network, mark int, lookup func(string) (*Member, bool)) (*nameServer, error) {
	host, err := nl.DupHandle(host)
	if err != nil {
		return nil, err
	}
	s := &nameServer{host: host, lookup: lookup, udpSlots: make(chan struct{}, nameUDP), tcpSlots: make(chan struct{}, nameTCP),
		marker: flows.NewMarker(mark), peers: map[netip.Addr]int{}}
	s.conns = dns.NewConns(host, s.marker.Own)
	conf, _ := resolv.Read(dns.HostResolvConf)
	s.hostResolver()
	for _, d := range conf.Search {
		s.search = append(s.search, strings.ToLower(strings.TrimSuffix(d, "."))+".")
	}
	for _, p := range []netip.Prefix{n.Prefix, n.Prefix6} {
		if p.IsValid() {
			s.clients = append(s.clients, p)
		}
	}
	err = nl.Do(host, func() error {
		for _, gw := range []netip.Addr{n.Gateway, n.Gateway6} {
			if !gw.IsValid() {
				continue
			}
			at := netip.AddrPortFrom(gw, 53)
			u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(at))
			if err != nil {
				return err
			}
			s.udp = append(s.udp, u)
			t, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(at))
			if err != nil {
				return err
			}
			s.tcp = append(s.tcp, t)
		}
		return nil
	})
	if err != nil {
		s.close()
		return nil, err
	}
	for _, u := range s.udp {
		s.wg.Add(1)
		go s.serveUDP(u)
	}
	for _, t := range s.tcp {
		s.wg.Add(1)
		go s.serveTCP(t)
	}
	return s, nil
}

// close stops the server and waits for its goroutines.
func (s *nameServer) close() {
	for _, u := range s.udp {
		u.Close()
	}
	for _, t := range s.tcp {
		t.Close()
	}
	s.conns.Close()
	s.wg.Wait()
	s.marker.Close()
	s.host.Close()
}

func (s *nameServer) client(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.clients {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (s *nameServer) serveUDP(u *net.UDPConn) {
	defer s.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := u.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !s.client(from.Addr()) {
			continue
		}
		if a, ok := s.answer(buf[:n]); ok {
			u.WriteToUDPAddrPort(a, from)
			continue
		}
		select {
		case s.udpSlots <- struct{}{}:
		default:
			continue // too many in flight: the client retries
		}
		q := append([]byte(nil), buf[:n]...)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.udpSlots }()
			s.forward("udp", q, func(a []byte) { u.WriteToUDPAddrPort(a, from) })
		}()
	}
}

func (s *nameServer) serveTCP(l *net.TCPListener) {
	defer s.wg.Done()
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		peer := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		if !s.client(peer) || !s.admit(peer, 1) {
			c.Close()
			continue
		}
		select {
		case s.tcpSlots <- struct{}{}:
		default:
			s.admit(peer, -1)
			c.Close() // over the bound
			continue
		}
		if !s.conns.Track(c) {
			<-s.tcpSlots
			s.admit(peer, -1)
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.tcpSlots; s.admit(peer, -1) }()
			defer s.conns.Release(c)
			s.serveConn(c)
		}()
	}
}

// admit counts a TCP connection of peer in (n = 1: unless it has
// nameTCPPeer already) or out (n = -1).
func (s *nameServer) admit(peer netip.Addr, n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n > 0 && s.peers[peer] >= nameTCPPeer {
		return false
	}
	if s.peers[peer] += n; s.peers[peer] == 0 {
		delete(s.peers, peer)
	}
	return true
}

// serveConn answers the queries of one TCP connection (RFC 7766: each
// message after its two-byte length) until it closes or idles.
func (s *nameServer) serveConn(c net.Conn) {
	for {
		c.SetReadDeadline(time.Now().Add(nameIdle))
		q, err := dns.ReadMsg(c)
		if err != nil {
			return
		}
		a, ok := s.answer(q)
		if !ok {
			if err := s.forward("tcp", q, func(b []byte) { a = b }); err != nil {
				return
			}
		}
		c.SetWriteDeadline(time.Now().Add(nameTimeout))
		if _, err := c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(a)))); err != nil {
			return
		}
		if _, err := c.Write(a); err != nil {
			return
		}
	}
}

// forward passes a query to the host's resolver and hands its answer to
// reply (SERVFAIL if the host has none, or it cannot be reached).
func (s *nameServer) forward(network string, q []byte, reply func([]byte)) error {
	upstream := s.hostResolver()
	err := dns.ErrDial
	if upstream.IsValid() {
		err = s.conns.Exchange(network, upstream, q, nameTimeout, reply)
	}
	if errors.Is(err, dns.ErrDial) {
		a, ferr := failure(q)
		if ferr != nil {
			return ferr
		}
		reply(a)
		return nil
	}
	return err
}

// hostResolver returns the host's first name server, reading the host's
// resolv.conf again when it changed (replaced, or written: its inode,
// size or time differ), so that a host whose resolver changes (a DHCP
// lease, a VPN) is followed with no stale copy: one stat per query passed
// on.
func (s *nameServer) hostResolver() netip.AddrPort {
	var stamp string
	if fi, err := os.Stat(dns.HostResolvConf); err == nil {
		stamp = fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			stamp += fmt.Sprint(" ", st.Ino)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if stamp != s.confStamp || stamp == "" {
		s.confStamp, s.upstream = stamp, netip.AddrPort{}
		if conf, err := resolv.Read(dns.HostResolvConf); err == nil && len(conf.Servers) > 0 {
			s.upstream = netip.AddrPortFrom(conf.Servers[0], 53)
		}
	}
	return s.upstream
}

// failure is a SERVFAIL answer to q.
func failure(q []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil, err
	}
	qs, _ := p.AllQuestions()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RecursionDesired: h.RecursionDesired,
		RCode: dnsmessage.RCodeServerFailure})
	b.StartQuestions()
	for _, x := range qs {
		b.Question(x)
	}
	return b.Finish()
}

// answer answers q itself if it asks for a member's name: its addresses of
// the type asked for (none, for another type or family: the name exists).
func (s *nameServer) answer(q []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil || h.Response {
		return nil, false
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 || qs[0].Class != dnsmessage.ClassINET {
		return nil, false
	}
	m, ok := s.member(qs[0].Name.String())
	if !ok {
		return nil, false
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true,
		RecursionDesired: h.RecursionDesired, RecursionAvailable: true})
	b.EnableCompression()
	b.StartQuestions()
	b.Question(qs[0])
	b.StartAnswers()
	rh := dnsmessage.ResourceHeader{Name: qs[0].Name, Class: dnsmessage.ClassINET, TTL: nameTTL}
	switch {
	case qs[0].Type == dnsmessage.TypeA && m.Addr.IsValid():
		b.AResource(rh, dnsmessage.AResource{A: m.Addr.As4()})
	case qs[0].Type == dnsmessage.TypeAAAA && m.Addr6.IsValid():
		b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: m.Addr6.As16()})
	}
	a, err := b.Finish()
	return a, err == nil
}

// member finds the member a queried name (with its trailing dot) is for:
// a name or alias, bare or followed by a search domain.
func (s *nameServer) member(fqdn string) (*Member, bool) {
	fqdn = strings.ToLower(fqdn)
	label, rest, _ := strings.Cut(fqdn, ".")
	if rest != "" {
		found := false
		for _, d := range s.search {
			found = found || rest == d
		}
		if !found {
			return nil, false
		}
	}
	return s.lookup(label)
}
