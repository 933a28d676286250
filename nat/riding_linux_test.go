package nat_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
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

// TestNoErrorsInAnothersName: an ICMP error that a namespace makes up
// about another link's connection (conntrack relates an error to a
// connection by the header it quotes, whatever link it comes from, and
// checks only its outer destination) must not reach the outside, nor take
// the connection's mark: a namespace could otherwise break another's
// connections (the outside's socket reads "connection refused") and keep
// one out of its Close's reach (Close forgets the connections marked with
// its link). The namespace's own error about its own connection is the
// control.
//
// Twice: the namespace that makes the errors up does not allow siblings,
// then does (the other one does not: "not both").
func TestNoErrorsInAnothersName(t *testing.T) {
	requireTools(t)
	nstest.RequireCmd(t, "conntrack")
	for _, allow := range []bool{false, true} {
		t.Run(fmt.Sprintf("AllowSiblings=%v", allow), func(t *testing.T) { noErrorsInAnothersName(t, allow) })
	}
}

func noErrorsInAnothersName(t *testing.T, allowSiblings bool) {
	w := nstest.NewWorld(t, "rerr-")
	ns1, ns2 := nstest.NewNS(t, "rerr-1"), nstest.NewNS(t, "rerr-2")
	cfg := nat.Config{HostNS: w.Host, Prefix6: netip.MustParsePrefix("fd00:73::/64")}
	l1, err := cfg.Connect(ns1, "up0", netip.MustParsePrefix("10.0.73.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	cfg.AllowSiblings, cfg.Prefix6 = allowSiblings, netip.MustParsePrefix("fd00:74::/64")
	l2, err := cfg.Connect(ns2, "up0", netip.MustParsePrefix("10.0.74.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	// The outside's ICMP, as it arrives.
	icmp, err := w.Inet.ListenPacket("ip4:icmp", "203.0.113.1")
	if err != nil {
		t.Fatal(err)
	}
	defer icmp.Close()
	unreachable := unreachableCounter(icmp, 3)
	// ns1's flow to the outside: 10.0.73.2:5001 -> 203.0.113.1:9996.
	c1, err := ns1.ListenPacket("udp4", "10.0.73.2:5001")
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if _, err := c1.WriteTo([]byte("flow"), &net.UDPAddr{IP: net.IPv4(203, 0, 113, 1), Port: 9996}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	markOf := func() string {
		out := nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "sh", "-c",
			"conntrack -L -p udp --dport 9996 -o extended 2>/dev/null || true")
		for _, f := range strings.Fields(out) {
			if strings.HasPrefix(f, "mark=") {
				return f
			}
		}
		return "none"
	}
	var index int
	if err := w.Host.Do(func() (err error) { index, err = netInterfaceIndex(l1.HostVeth); return err }); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("mark=%d", index)
	if m := markOf(); m != want {
		t.Fatalf("ns1's connection: %s, want %s", m, want)
	}
	// A port unreachable about the outside's reply 203.0.113.1:9996 ->
	// 10.0.73.2:5001, sent to the outside host: from ns2 (made up), then
	// from ns1 (its own, the control).
	outside, quotedSrc, quotedDst := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddrPort("203.0.113.1:9996"), netip.MustParseAddrPort("10.0.73.2:5001")
	portUnreachable(t, ns2, netip.MustParseAddr("10.0.74.2"), outside, quotedSrc, quotedDst)
	if n := unreachable(); n != 0 {
		t.Errorf("%d made-up errors about another link's connection reached the outside", n)
	}
	if m := markOf(); m != want {
		t.Errorf("ns1's connection after ns2's made-up errors: %s, want %s", m, want)
	}
	portUnreachable(t, ns1, netip.MustParseAddr("10.0.73.2"), outside, quotedSrc, quotedDst)
	if n := unreachable(); n == 0 {
		t.Error("control: ns1's own errors about its connection did not reach the outside")
	}

	// The same with IPv6: ns1's flow [its address]:5001 ->
	// [2001:db8::1]:9996.
	icmp6, err := w.Inet.ListenPacket("ip6:ipv6-icmp", "2001:db8::1")
	if err != nil {
		t.Fatal(err)
	}
	defer icmp6.Close()
	unreachable6 := unreachableCounter(icmp6, 1)
	a1, a2 := l1.NSAddr6.Addr(), l2.NSAddr6.Addr()
	c6, err := ns1.ListenPacket("udp6", netip.AddrPortFrom(a1, 5001).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c6.Close()
	if _, err := c6.WriteTo([]byte("flow"), &net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 9996}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	outside6, quoted6Src, quoted6Dst := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddrPort("[2001:db8::1]:9996"), netip.AddrPortFrom(a1, 5001)
	portUnreachable(t, ns2, a2, outside6, quoted6Src, quoted6Dst)
	if n := unreachable6(); n != 0 {
		t.Errorf("%d made-up ICMPv6 errors about another link's connection reached the outside", n)
	}
	portUnreachable(t, ns1, a1, outside6, quoted6Src, quoted6Dst)
	if n := unreachable6(); n == 0 {
		t.Error("control: ns1's own ICMPv6 errors about its connection did not reach the outside")
	}

	// The host's own connection to ns1: ns2's made-up error about it must
	// not reach the host's socket; ns1's own does. (ns1 listens: its
	// kernel would refuse the datagram itself.)
	sink, err := ns1.ListenPacket("udp4", "10.0.73.2:5002")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	var c net.Conn
	if err := w.Host.Do(func() (err error) { c, err = net.Dial("udp4", "10.0.73.2:5002"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("flow")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	hostEnd := netip.MustParseAddr("10.0.73.1")
	quotedSrc = netip.MustParseAddrPort(c.LocalAddr().String())
	quotedDst = netip.MustParseAddrPort("10.0.73.2:5002")
	refused := func() bool {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := c.Read(make([]byte, 8))
		return errors.Is(err, syscall.ECONNREFUSED)
	}
	portUnreachable(t, ns2, netip.MustParseAddr("10.0.74.2"), hostEnd, quotedSrc, quotedDst)
	if refused() {
		t.Error("a made-up error about the host's connection to another namespace reached the host's socket")
	}
	portUnreachable(t, ns1, netip.MustParseAddr("10.0.73.2"), hostEnd, quotedSrc, quotedDst)
	if !refused() {
		t.Error("control: the namespace's own error about the host's connection to it did not reach the host's socket")
	}
}

// unreachableCounter returns a function that counts the destination
// unreachable messages (ICMP type typ: 3, or 1 for ICMPv6) c receives
// until none has come for 300 ms.
func unreachableCounter(c net.PacketConn, typ byte) func() int {
	return func() int {
		n := 0
		buf := make([]byte, 1500)
		for {
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			m, _, err := c.ReadFrom(buf)
			if err != nil {
				return n
			}
			if m > 0 && buf[0] == typ {
				n++
			}
		}
	}
}

// portUnreachable sends, from ns's address from to the address to, three
// ICMP (ICMPv6 for IPv6 addresses) port unreachable errors quoting a UDP
// datagram quotedSrc -> quotedDst.
func portUnreachable(t *testing.T, ns *netns.Handle, from, to netip.Addr, quotedSrc, quotedDst netip.AddrPort) {
	t.Helper()
	network, msg := "ip4:icmp", []byte{3, 3, 0, 0, 0, 0, 0, 0}
	quoted := []byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0}
	if from.Is6() {
		// (The kernel fills in an ICMPv6 checksum; an IPv6 header has
		// none.)
		network, msg = "ip6:ipv6-icmp", []byte{1, 4, 0, 0, 0, 0, 0, 0}
		quoted = []byte{0x60, 0, 0, 0, 0, 8, 17, 64}
	}
	c, err := ns.ListenPacket(network, from.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	quoted = append(append(quoted, quotedSrc.Addr().AsSlice()...), quotedDst.Addr().AsSlice()...)
	quoted = binary.BigEndian.AppendUint16(quoted, quotedSrc.Port())
	quoted = binary.BigEndian.AppendUint16(quoted, quotedDst.Port())
	quoted = append(quoted, 0, 8, 0, 0) // length, no checksum
	if !from.Is6() {
		binary.BigEndian.PutUint16(quoted[10:], checksum(quoted[:20]))
	}
	msg = append(msg, quoted...)
	if !from.Is6() {
		binary.BigEndian.PutUint16(msg[2:], checksum(msg))
	}
	for range 3 {
		if _, err := c.WriteTo(msg, &net.IPAddr{IP: to.AsSlice()}); err != nil {
			t.Fatal(err)
		}
	}
}

// checksum is the Internet checksum (RFC 1071).
func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
