package network_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nat/internal/dns"
	"github.com/nsnet/nsnet/nat/network"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"golang.org/x/net/dns/dnsmessage"
)

// TestConcurrentMembers: members attached, published, unpublished and
// closed from many goroutines at once, and the network closed while
// attaches still run: every call either works or fails cleanly, the names
// and addresses stay unique, and the host is as before at the end (run
// with -race in CI).
func TestConcurrentMembers(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "ncc-")
	before := hostState(t, w)
	n := newNetwork(t, network.Config{HostNS: w.Host, Uplink: w.Uplink, Prefix: netip.MustParsePrefix("10.84.0.0/24"),
		Prefix6: netip.MustParsePrefix("fd00:84::/64")})
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[netip.Addr]bool{}
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 4 {
				ns, err := netns.NewAnonymous()
				if err != nil {
					t.Error(err)
					return
				}
				defer ns.Close()
				m, err := n.Attach(ns, network.MemberConfig{Name: fmt.Sprintf("g%d-%d", g, i)})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[m.Addr] {
					t.Errorf("address %v given twice", m.Addr)
				}
				seen[m.Addr] = true
				mu.Unlock()
				port := nat.Port{Protocol: "tcp", HostPort: uint16(20000 + g*10 + i)}
				if err := m.Publish(port); err != nil {
					t.Error(err)
				}
				if i%2 == 0 {
					if err := m.Unpublish(port); err != nil {
						t.Error(err)
					}
					if err := m.Close(); err != nil {
						t.Error(err)
					}
					mu.Lock()
					delete(seen, m.Addr)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if got := len(n.Members()); got != 16 {
		t.Errorf("%d members, want 16", got)
	}
	// Close while attaches run: each attach works (and is closed by the
	// network's Close) or fails with os.ErrClosed.
	var spaces []*netns.Handle
	for range 4 {
		ns, err := netns.NewAnonymous()
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
		spaces = append(spaces, ns)
	}
	for _, ns := range spaces {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := n.Attach(ns, network.MemberConfig{})
			if err == nil {
				m.Close()
			}
		}()
	}
	if err := n.Close(); err != nil {
		t.Error(err)
	}
	wg.Wait()
	if after := hostState(t, w); after != before {
		t.Errorf("host after Close:\n%s", diff(before, after))
	}
}

// TestNamesUnderFlood: a member floods the name server (UDP queries for
// names the host's resolver never answers, and TCP connections it keeps
// open); the host process stays bounded (goroutines), and another member
// still resolves names, over UDP and over TCP.
func TestNamesUnderFlood(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "nfl-")
	hostResolvConf(t, w) // (the outside's name server answers www.test.example only)
	n := newNetwork(t, network.Config{HostNS: w.Host, Uplink: w.Uplink, Prefix: netip.MustParsePrefix("10.85.0.0/24")})
	attach(t, n, "nfl-srv", network.MemberConfig{Name: "server"})
	badNS, _ := attach(t, n, "nfl-bad", network.MemberConfig{Name: "bad"})
	okNS, _ := attach(t, n, "nfl-ok", network.MemberConfig{Name: "ok"})
	gw := netip.AddrPortFrom(n.Gateway, 53).String()
	base := runtime.NumGoroutine()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // UDP: queries as fast as it can, for names forwarded upstream
		defer wg.Done()
		c, err := badNS.Dial("udp", gw)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		q := query(t, "nosuch.example.")
		for ctx.Err() == nil {
			c.Write(q)
		}
	}()
	go func() { // TCP: connections held open
		defer wg.Done()
		var conns []net.Conn
		for ctx.Err() == nil && len(conns) < 200 {
			c, err := badNS.Dial("tcp", gw)
			if err == nil {
				conns = append(conns, c)
			}
		}
		<-ctx.Done()
		for _, c := range conns {
			c.Close()
		}
	}()
	time.Sleep(time.Second)
	if g := runtime.NumGoroutine(); g > base+64+16+32 {
		t.Errorf("%d goroutines under the flood (%d before): unbounded", g, base)
	}
	for _, network := range []string{"udp", "tcp"} {
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return okNS.DialContext(ctx, network, gw)
		}}
		c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		addrs, err := r.LookupHost(c, "server")
		cancel()
		if err != nil || len(addrs) != 1 || addrs[0] != "10.85.0.2" {
			t.Errorf("%s under the flood: server = %v, %v", network, addrs, err)
		}
	}
	cancel()
	wg.Wait()
}

// query is a DNS query for an A record of name.
func query(t *testing.T, name string) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 1, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestHostResolverChanges: the host's resolv.conf replaced under a live
// network (a new lease, a VPN): the name server passes queries to the new
// name server at once, with no stale copy of the old.
func TestHostResolverChanges(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "nhr-")
	hostResolvConf(t, w) // nameserver 203.0.113.1, which knows www.test.example only
	n := newNetwork(t, network.Config{HostNS: w.Host, Uplink: w.Uplink, Prefix: netip.MustParsePrefix("10.89.8.0/24")})
	attach(t, n, "nhr-m", network.MemberConfig{Name: "m"})
	s, err := nstest.ServeDNS(w.Inet, "[2001:db8::1]:53", map[string]netip.Addr{"new.test.example": netip.MustParseAddr("203.0.113.9")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := resolve(t, "nhr-m", "ahostsv4", "new.test.example"); err == nil {
		t.Fatal("control: new.test.example resolved before the host's resolver changed")
	}
	tmp := dns.HostResolvConf + ".new"
	if err := os.WriteFile(tmp, []byte("nameserver 2001:db8::1\nsearch test.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dns.HostResolvConf); err != nil {
		t.Fatal(err)
	}
	if got, err := resolve(t, "nhr-m", "ahostsv4", "new.test.example"); err != nil || got.String() != "203.0.113.9" {
		t.Errorf("after the host's resolver changed: new.test.example = %v, %v", got, err)
	}
}
