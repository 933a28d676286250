package nat_test

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nstest"
)

// TestNoRidingAnotherLinksFlow: ns1 has an established UDP flow to the
// outside; ns2 takes ns1's address and sends from the same address and
// port to the same destination, which conntrack matches to ns1's
// established connection (its tuples do not include the interface). None
// of ns2's datagrams may leave: an established flow skips the reverse-path
// lookup only on the link that began it (its conntrack mark). ns1's own
// datagrams, sent before and after, are the control.
func TestNoRidingAnotherLinksFlow(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "ride-")
	ns1, ns2 := nstest.NewNS(t, "ride-1"), nstest.NewNS(t, "ride-2")
	cfg := nat.Config{HostNS: w.Host}
	l1, err := cfg.Connect(ns1, "up0", netip.MustParsePrefix("10.0.71.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	l2, err := cfg.Connect(ns2, "up0", netip.MustParsePrefix("10.0.72.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()

	// The outside: records what arrives, answers each datagram.
	srv, err := w.Inet.ListenPacket("udp4", "203.0.113.1:9997")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var mu sync.Mutex
	var got []string
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, string(buf[:n]))
			mu.Unlock()
			srv.WriteTo([]byte("pong"), from)
		}
	}()
	seen := func(payload string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, g := range got {
			if g == payload {
				return true
			}
		}
		return false
	}
	dst := &net.UDPAddr{IP: net.IPv4(203, 0, 113, 1), Port: 9997}
	c1, err := ns1.ListenPacket("udp4", "10.0.71.2:5000")
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	send := func(c net.PacketConn, payload string) {
		if _, err := c.WriteTo([]byte(payload), dst); err != nil {
			t.Fatal(err)
		}
	}
	send(c1, "legit-before")
	c1.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, _, err := c1.ReadFrom(make([]byte, 8)); err != nil {
		t.Fatalf("ns1's flow is not established (no answer): %v", err)
	}
	nstest.Cmd(t, "ip", "-n", "ride-2", "addr", "add", "10.0.71.2/32", "dev", "eth0")
	c2, err := ns2.ListenPacket("udp4", "10.0.71.2:5000")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	for range 20 {
		send(c2, "intruder")
	}
	send(c1, "legit-after")
	for deadline := time.Now().Add(5 * time.Second); !seen("legit-after") && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !seen("legit-after") {
		t.Fatal("control: ns1's datagram after the probes did not arrive")
	}
	time.Sleep(50 * time.Millisecond)
	if seen("intruder") {
		mu.Lock()
		t.Errorf("ns2 rode ns1's established flow: the outside got %s", strings.Join(got, ", "))
		mu.Unlock()
	}
}
