package nstest

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/nsnet/nsnet/netns"
	"golang.org/x/net/dns/dnsmessage"
)

// DNSServer is a small authoritative name server started by ServeDNS.
type DNSServer struct {
	udp   net.PacketConn
	tcp   net.Listener
	names map[string]netip.Addr
	wg    sync.WaitGroup

	mu      sync.Mutex
	queries int
}

// ServeDNS starts a name server inside ns on addr ("ip:port", UDP and
// TCP) that answers A and AAAA queries for names (fully qualified or not:
// "www.test" and "www.test." are the same) with their address, and
// NXDOMAIN for any other name. For tests of name resolution in a private
// world: put one on the World's outside host. Close stops it.
func ServeDNS(ns *netns.Handle, addr string, names map[string]netip.Addr) (*DNSServer, error) {
	s := &DNSServer{names: map[string]netip.Addr{}}
	for n, a := range names {
		s.names[strings.ToLower(strings.TrimSuffix(n, "."))+"."] = a
	}
	err := ns.Do(func() (err error) {
		if s.udp, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		s.tcp, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		if s.udp != nil {
			s.udp.Close()
		}
		return nil, err
	}
	s.wg.Add(2)
	go s.serveUDP()
	go s.serveTCP()
	return s, nil
}

// Queries is how many queries the server has answered.
func (s *DNSServer) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// Close stops the server.
func (s *DNSServer) Close() error {
	err := errors.Join(s.udp.Close(), s.tcp.Close())
	s.wg.Wait()
	return err
}

func (s *DNSServer) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := s.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		if a, ok := s.answer(buf[:n]); ok {
			s.udp.WriteTo(a, from)
		}
	}
}

func (s *DNSServer) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			for {
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				a, ok := s.answer(q)
				if !ok {
					return
				}
				c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(a))), a...))
			}
		}()
	}
}

// answer builds the reply to one query.
func (s *DNSServer) answer(q []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil, false
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		return nil, false
	}
	s.mu.Lock()
	s.queries++
	s.mu.Unlock()
	qn := qs[0]
	addr, known := s.names[strings.ToLower(qn.Name.String())]
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	b.StartQuestions()
	b.Question(qn)
	b.StartAnswers()
	rr := dnsmessage.ResourceHeader{Name: qn.Name, Class: dnsmessage.ClassINET, TTL: 60}
	switch {
	case known && qn.Type == dnsmessage.TypeA && addr.Is4():
		b.AResource(rr, dnsmessage.AResource{A: addr.As4()})
	case known && qn.Type == dnsmessage.TypeAAAA && addr.Is6():
		b.AAAAResource(rr, dnsmessage.AAAAResource{AAAA: addr.As16()})
	}
	out, err := b.Finish()
	return out, err == nil
}
