package nat_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/veth"
	"golang.org/x/sys/unix"
)

// echo reaches addr from ns over TCP or UDP and returns the source the
// server saw.
func echo(ns *netns.Handle, proto, addr string) (string, error) {
	if proto == "udp" {
		return nstest.EchoUDP(ns, addr)
	}
	return nstest.Echo(ns, addr)
}

// TestPublishReachable: a published TCP and UDP port is reachable from
// every vantage point a user expects, and the server sees the right
// source: the outside host (its own address: no SNAT), the host itself
// (to the uplink's address, and to 127.0.0.1 for a port published there),
// another connected namespace (its own address) and the namespace itself
// (hairpin: the host end's address). A port not published, and one
// published on 127.0.0.1 only, are not reachable from outside.
func TestPublishReachable(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "pub-")
	a, b := nstest.NewNS(t, "pub-a"), nstest.NewNS(t, "pub-b")
	local := netip.MustParseAddr("127.0.0.1")
	la, err := nat.Config{HostNS: w.Host, Ports: []nat.Port{
		{Protocol: "TCP", HostPort: 8080, NSPort: 80}, // (any case, as Docker takes it)
		{Protocol: "Udp", HostPort: 5353, NSPort: 53},
		{Protocol: "tcp", HostAddr: local, HostPort: 9090, NSPort: 80},
		{Protocol: "udp", HostAddr: local, HostPort: 9053, NSPort: 53},
	}}.Connect(a, "up0", netip.MustParsePrefix("10.60.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()
	lb, err := nat.Config{HostNS: w.Host}.Connect(b, "up0", netip.MustParsePrefix("10.61.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	nstest.Listen(t, a, "10.60.0.2:80")
	u, err := nstest.ServeUDP(a, "10.60.0.2:53")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()

	for _, c := range []struct {
		from     string
		ns       *netns.Handle
		tcp, udp string // destination
		want     string // source the server sees; "" for unreachable
	}{
		{"outside", w.Inet, "203.0.113.2:8080", "203.0.113.2:5353", "203.0.113.1"},
		{"host, uplink address", w.Host, "203.0.113.2:8080", "203.0.113.2:5353", "203.0.113.2"},
		{"host, 127.0.0.1", w.Host, "127.0.0.1:9090", "127.0.0.1:9053", "10.60.0.1"},
		// A port without an address is the host's on 127.0.0.1 too, as
		// with docker run -p (a curl of localhost:8080 on the host).
		{"host, 127.0.0.1, a port without an address", w.Host, "127.0.0.1:8080", "127.0.0.1:5353", "10.60.0.1"},
		{"another namespace", b, "203.0.113.2:8080", "203.0.113.2:5353", "10.61.0.2"},
		{"the namespace itself (hairpin)", a, "203.0.113.2:8080", "203.0.113.2:5353", "10.60.0.1"},
		{"outside, to a port not published", w.Inet, "203.0.113.2:8081", "203.0.113.2:5354", ""},
		{"outside, to the 127.0.0.1 port on the uplink", w.Inet, "203.0.113.2:9090", "203.0.113.2:9053", ""},
	} {
		for _, proto := range []string{"tcp", "udp"} {
			dst := c.tcp
			if proto == "udp" {
				dst = c.udp
			}
			seen, err := echo(c.ns, proto, dst)
			switch {
			case c.want == "" && err == nil:
				t.Errorf("%s %s to %s: reached (seen from %s)", c.from, proto, dst, seen)
			case c.want != "" && (err != nil || seen != c.want):
				t.Errorf("%s %s to %s: seen from %q, %v; want %s", c.from, proto, dst, seen, err, c.want)
			}
		}
	}
	if got := len(la.Ports()); got != 6 { // 8080 and 5353 on the uplink's address and 127.0.0.1; 9090, 9053
		t.Errorf("Ports() = %v", la.Ports())
	}
}

// udp4Frame is an Ethernet frame with an IPv4 UDP datagram from src to
// dst:port.
func udp4Frame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, port uint16) []byte {
	f := append(append(append([]byte{}, dstMAC...), srcMAC...), 0x08, 0x00)
	ip := make([]byte, 20+8+5)
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(ip[20:], 40000)
	binary.BigEndian.PutUint16(ip[22:], port)
	binary.BigEndian.PutUint16(ip[24:], 8+5)
	copy(ip[28:], "hello") // UDP checksum 0: none
	return append(f, ip...)
}

// inject sends frame out of the link called dev inside ns, as raw
// Ethernet.
func inject(t *testing.T, ns *netns.Handle, dev string, frame []byte) {
	t.Helper()
	l, err := veth.Lookup(ns, dev)
	if err != nil {
		t.Fatal(err)
	}
	err = ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for range 5 {
			if err := unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: l.Index, Halen: 6}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestLoopbackPortsStayLocal: a port published on 127.0.0.1 (which turns
// route_localnet on for the link's host end) is not reachable by a packet
// addressed to 127.0.0.1 that arrives from outside (on the uplink) or from
// another connected namespace (on its host end, where route_localnet would
// let it in but for the input chain's drop): raw frames, counted at the
// server.
func TestLoopbackPortsStayLocal(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "lpb-")
	a, b := nstest.NewNS(t, "lpb-a"), nstest.NewNS(t, "lpb-b")
	la, err := nat.Config{HostNS: w.Host, Ports: []nat.Port{{Protocol: "udp", HostAddr: netip.MustParseAddr("127.0.0.1"), HostPort: 9053, NSPort: 53}}}.
		Connect(a, "up0", netip.MustParsePrefix("10.62.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()
	lb, err := nat.Config{HostNS: w.Host}.Connect(b, "up0", netip.MustParsePrefix("10.63.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	var got atomic.Int32
	var srv net.PacketConn
	if err := a.Do(func() (err error) { srv, err = net.ListenPacket("udp", "10.62.0.2:53"); return err }); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 128)
		for {
			if _, _, err := srv.ReadFrom(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	if s, err := nstest.EchoUDP(w.Host, "127.0.0.1:9053"); err == nil {
		t.Fatalf("the control reached an echo server: %s", s) // (srv counts, it does not echo)
	}
	if got.Load() == 0 {
		t.Fatal("control: the host's own datagram to 127.0.0.1:9053 did not arrive: the test proves nothing")
	}
	got.Store(0)
	loop := netip.MustParseAddr("127.0.0.1")
	up0, _ := veth.Lookup(w.Host, "up0")
	inet0, _ := veth.Lookup(w.Inet, "inet0")
	inject(t, w.Inet, "inet0", udp4Frame(up0.HardwareAddr, inet0.HardwareAddr, netip.MustParseAddr("203.0.113.1"), loop, 9053))
	hostEnd, _ := veth.Lookup(w.Host, lb.HostVeth)
	peer, _ := veth.Lookup(b, lb.NSVeth)
	inject(t, b, lb.NSVeth, udp4Frame(hostEnd.HardwareAddr, peer.HardwareAddr, netip.MustParseAddr("10.63.0.2"), loop, 9053))
	// From the link with route_localnet on, to a service on the host's own
	// loopback: dropped (the input chain), not delivered to the host.
	var hostGot atomic.Int32
	var hostSrv net.PacketConn
	if err := w.Host.Do(func() (err error) { hostSrv, err = net.ListenPacket("udp", "127.0.0.1:9055"); return err }); err != nil {
		t.Fatal(err)
	}
	defer hostSrv.Close()
	go func() {
		buf := make([]byte, 128)
		for {
			if _, _, err := hostSrv.ReadFrom(buf); err != nil {
				return
			}
			hostGot.Add(1)
		}
	}()
	hostEndA, _ := veth.Lookup(w.Host, la.HostVeth)
	peerA, _ := veth.Lookup(a, la.NSVeth)
	inject(t, a, la.NSVeth, udp4Frame(hostEndA.HardwareAddr, peerA.HardwareAddr, netip.MustParseAddr("10.62.0.2"), loop, 9055))
	inject(t, a, la.NSVeth, udp4Frame(hostEndA.HardwareAddr, peerA.HardwareAddr, netip.MustParseAddr("10.62.0.2"), loop, 9053))
	// Someone else's DNAT of 127.0.0.1 (as Docker's for a port published
	// on 127.0.0.1), to a's server: translated before the routing decision,
	// b's packet escapes the martian check and the input chain, and
	// from_link drops it; the same DNAT of the uplink's address, the
	// control below, arrives.
	nftIn(t, w, "add table ip foreign; add chain ip foreign pre { type nat hook prerouting priority dstnat; }; "+
		"add rule ip foreign pre ip daddr 127.0.0.1 udp dport 9057 dnat to 10.62.0.2:53; "+
		"add rule ip foreign pre ip daddr 203.0.113.2 udp dport 9058 dnat to 10.62.0.2:53")
	defer nstest.CmdErr("ip", "netns", "exec", w.HostName, "nft", "delete", "table", "ip", "foreign")
	inject(t, b, lb.NSVeth, udp4Frame(hostEnd.HardwareAddr, peer.HardwareAddr, netip.MustParseAddr("10.63.0.2"), loop, 9057))
	// The same frames to the uplink's address on a published port arrive:
	// the frames themselves are right.
	if err := la.Publish(nat.Port{Protocol: "udp", HostPort: 9054, NSPort: 53}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := got.Load(); n != 0 {
		t.Errorf("%d datagrams to 127.0.0.1:9053 from outside or from a namespace reached the server", n)
	}
	if n := hostGot.Load(); n != 0 {
		t.Errorf("%d datagrams from the namespace reached a service on the host's 127.0.0.1", n)
	}
	// 9054 has no address: it is the host's on 127.0.0.1 too, and that
	// stays the host's alone (the host's own datagram arrives; frames from
	// outside and from a link to 127.0.0.1:9054 do not).
	inject(t, w.Inet, "inet0", udp4Frame(up0.HardwareAddr, inet0.HardwareAddr, netip.MustParseAddr("203.0.113.1"), loop, 9054))
	inject(t, b, lb.NSVeth, udp4Frame(hostEnd.HardwareAddr, peer.HardwareAddr, netip.MustParseAddr("10.63.0.2"), loop, 9054))
	time.Sleep(200 * time.Millisecond)
	if n := got.Load(); n != 0 {
		t.Errorf("%d datagrams to 127.0.0.1:9054 (a port without an address) from outside or from a namespace reached the server", n)
	}
	nstest.EchoUDP(w.Host, "127.0.0.1:9054")
	if got.Load() == 0 {
		t.Error("the host's own datagram to 127.0.0.1:9054 (a port without an address) did not arrive")
	}
	got.Store(0)
	inject(t, w.Inet, "inet0", udp4Frame(up0.HardwareAddr, inet0.HardwareAddr, netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2"), 9054))
	time.Sleep(200 * time.Millisecond)
	if got.Load() == 0 {
		t.Error("control: raw frames to the uplink's published port did not arrive: the test proves nothing")
	}
	got.Store(0)
	inject(t, b, lb.NSVeth, udp4Frame(hostEnd.HardwareAddr, peer.HardwareAddr, netip.MustParseAddr("10.63.0.2"), netip.MustParseAddr("203.0.113.2"), 9058))
	time.Sleep(200 * time.Millisecond)
	if got.Load() == 0 {
		t.Error("control: b's frame to someone's DNAT of the uplink's address did not arrive: the test proves nothing")
	}
}

// TestPublishRefusals: a port published already (by this link, another
// link, or someone else's entry in the map), one a socket of the host
// uses, and bad input are refused before anything changes; a failed
// Connect with ports leaves nothing; Unpublish of a port not published is
// os.ErrNotExist.
func TestPublishRefusals(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "prf-")
	a, b := nstest.NewNS(t, "prf-a"), nstest.NewNS(t, "prf-b")
	la, err := nat.Config{HostNS: w.Host}.Connect(a, "up0", netip.MustParsePrefix("10.64.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()
	lb, err := nat.Config{HostNS: w.Host}.Connect(b, "up0", netip.MustParsePrefix("10.65.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	if err := la.Publish(nat.Port{Protocol: "tcp", HostPort: 8080}); err != nil {
		t.Fatal(err)
	}
	hostSock, err := w.Host.Listen("tcp", "203.0.113.2:7070")
	if err != nil {
		t.Fatal(err)
	}
	defer hostSock.Close()
	nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft", "add element inet nsnet ports { 203.0.113.2 . tcp . 6060 : 10.99.0.2 . 6060 }")
	before := state(t, w)
	v6 := netip.MustParseAddr("2001:db8::1")
	for _, c := range []struct {
		name string
		l    *nat.Link
		p    nat.Port
		want error
	}{
		{"again, same link", la, nat.Port{Protocol: "tcp", HostPort: 8080, NSPort: 81}, os.ErrExist},
		{"again, another link", lb, nat.Port{Protocol: "tcp", HostPort: 8080}, os.ErrExist},
		{"someone else's entry", lb, nat.Port{Protocol: "tcp", HostPort: 6060}, os.ErrExist},
		{"a socket of the host", lb, nat.Port{Protocol: "tcp", HostPort: 7070}, os.ErrExist},
		{"protocol", lb, nat.Port{Protocol: "sctp", HostPort: 1}, nat.ErrInvalidConfig},
		{"port 0", lb, nat.Port{Protocol: "udp"}, nat.ErrInvalidConfig},
		{"IPv6 address", lb, nat.Port{Protocol: "tcp", HostAddr: v6, HostPort: 1}, nat.ErrInvalidConfig},
		{"127.0.0.2", lb, nat.Port{Protocol: "tcp", HostAddr: netip.MustParseAddr("127.0.0.2"), HostPort: 1}, nat.ErrInvalidConfig},
		{"not the host's address", lb, nat.Port{Protocol: "tcp", HostAddr: netip.MustParseAddr("198.51.100.7"), HostPort: 1}, nat.ErrInvalidConfig},
		{"range past 65535", lb, nat.Port{Protocol: "tcp", HostPort: 65530, Count: 10}, nat.ErrInvalidConfig},
	} {
		if err := c.l.Publish(c.p); !errors.Is(err, c.want) {
			t.Errorf("%s: Publish(%v) = %v, want %v", c.name, c.p, err, c.want)
		}
		sameState(t, w, before, "after a refused Publish: "+c.name)
	}
	// All or none: the second port of a call is refused, the first not added.
	if err := lb.Publish(nat.Port{Protocol: "udp", HostPort: 5000}, nat.Port{Protocol: "tcp", HostPort: 8080}); !errors.Is(err, os.ErrExist) {
		t.Errorf("Publish of a free and a taken port: %v", err)
	}
	sameState(t, w, before, "after a half-refused Publish")
	if err := lb.Unpublish(nat.Port{Protocol: "udp", HostPort: 5000}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Unpublish of a port not published: %v", err)
	}
	c := nstest.NewNS(t, "prf-c")
	if _, err := (nat.Config{HostNS: w.Host, Ports: []nat.Port{{Protocol: "tcp", HostPort: 8080}}}).Connect(c, "up0", netip.MustParsePrefix("10.66.0.0/24")); !errors.Is(err, os.ErrExist) {
		t.Errorf("Connect with a taken port: %v", err)
	}
	sameState(t, w, before, "after a Connect refused for its port")
}

// TestUnpublishForgetsFlows: an outside UDP client keeps sending to a
// published port whose server never answers; after Unpublish, and the
// same port published for another namespace, the client's datagrams reach
// the new one at once: neither the old translation's conntrack entry
// (Unpublish deletes it) nor the untranslated one the client's datagrams
// made while the port was not published (Publish deletes it) pins it.
func TestUnpublishForgetsFlows(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "upf-")
	a, b := nstest.NewNS(t, "upf-a"), nstest.NewNS(t, "upf-b")
	la, err := nat.Config{HostNS: w.Host}.Connect(a, "up0", netip.MustParsePrefix("10.67.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()
	lb, err := nat.Config{HostNS: w.Host}.Connect(b, "up0", netip.MustParsePrefix("10.68.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	count := func(ns *netns.Handle, addr string) (*atomic.Int32, func()) {
		var n atomic.Int32
		var c net.PacketConn
		if err := ns.Do(func() (err error) { c, err = net.ListenPacket("udp", addr); return err }); err != nil {
			t.Fatal(err)
		}
		go func() {
			buf := make([]byte, 64)
			for {
				if _, _, err := c.ReadFrom(buf); err != nil {
					return
				}
				n.Add(1)
			}
		}()
		return &n, func() { c.Close() }
	}
	na, ca := count(a, "10.67.0.2:53")
	defer ca()
	nb, cb := count(b, "10.68.0.2:53")
	defer cb()
	var client net.Conn
	if err := w.Inet.Do(func() (err error) { client, err = net.Dial("udp", "203.0.113.2:5353"); return err }); err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				client.Write([]byte("x"))
			}
		}
	}()
	p := nat.Port{Protocol: "udp", HostPort: 5353, NSPort: 53}
	if err := la.Publish(p); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if na.Load() == 0 {
		t.Fatal("the published port did not reach A")
	}
	if err := la.Unpublish(p); err != nil {
		t.Fatal(err)
	}
	if err := lb.Publish(p); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if nb.Load() == 0 {
		t.Error("after Unpublish and Publish on B, the client's datagrams did not reach B: its conntrack entry pinned it to A")
	}
}

// TestSweepRemovesDeadOwnersPorts: a process killed with published ports
// leaves them; Sweep removes them, and a live link's ports stay and work.
func TestSweepRemovesDeadOwnersPorts(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "swp-")
	live := nstest.NewNS(t, "swp-live")
	l, err := nat.Config{HostNS: w.Host, Ports: []nat.Port{{Protocol: "tcp", HostPort: 8080, NSPort: 80}}}.
		Connect(live, "up0", netip.MustParsePrefix("10.69.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	nstest.Listen(t, live, "10.69.0.2:80")
	before := state(t, w)
	killedChild(t, w, "swp-dead", "10.69.1.0/24", "", "NSNET_HELPER_PORT=9090")
	if !strings.Contains(nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft", "list", "map", "inet", "nsnet", "ports"), "9090") {
		t.Fatal("the killed helper published nothing: the test proves nothing")
	}
	if _, err := nat.Sweep(w.Host); err != nil {
		t.Fatal(err)
	}
	sameState(t, w, before, "after Sweep")
	if seen, err := nstest.Echo(w.Inet, "203.0.113.2:8080"); err != nil || seen != "203.0.113.1" {
		t.Errorf("the live link's port after Sweep: %q, %v", seen, err)
	}
}

// TestPortsSurviveFlushAndNamesFreeAtOnce: a published port works again
// after "nft flush ruleset" (the guard puts the link's entries back, its
// ports with them); and right after Close the same namespace connects
// again with the same host end name, prefix and port.
func TestPortsSurviveFlushAndNamesFreeAtOnce(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "pfl-")
	ns := nstest.NewNS(t, "pfl-ns")
	cfg := nat.Config{HostNS: w.Host, HostVeth: "pfl-host", Ports: []nat.Port{{Protocol: "tcp", HostPort: 8080, NSPort: 80}}}
	p := netip.MustParsePrefix("10.70.0.0/24")
	l, err := cfg.Connect(ns, "up0", p)
	if err != nil {
		t.Fatal(err)
	}
	nstest.Listen(t, ns, "10.70.0.2:80")
	nftIn(t, w, "flush", "ruleset")
	var seen string
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if seen, err = nstest.Echo(w.Inet, "203.0.113.2:8080"); err == nil {
			break
		}
	}
	if seen != "203.0.113.1" {
		t.Errorf("the published port after a flush: %q, %v", seen, err)
	}
	if err := l.Close(); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	l, err = cfg.Connect(ns, "up0", p) // the same names, at once
	if err != nil {
		t.Fatalf("Connect right after Close, same names, prefix and port: %v", err)
	}
	defer l.Close()
	if seen, err := nstest.Echo(w.Inet, "203.0.113.2:8080"); err != nil || seen != "203.0.113.1" {
		t.Errorf("the port through the new link: %q, %v", seen, err)
	}
}

// TestPublishRace: two links publish the same port at the same moment, 50
// times: exactly one of them gets it each time (the kernel's exclusive
// add decides), and the port works.
func TestPublishRace(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "prc-")
	a, b := nstest.NewNS(t, "prc-a"), nstest.NewNS(t, "prc-b")
	la, err := nat.Config{HostNS: w.Host}.Connect(a, "up0", netip.MustParsePrefix("10.72.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()
	lb, err := nat.Config{HostNS: w.Host}.Connect(b, "up0", netip.MustParsePrefix("10.73.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	nstest.Listen(t, a, "10.72.0.2:80")
	nstest.Listen(t, b, "10.73.0.2:80")
	p := nat.Port{Protocol: "tcp", HostPort: 8080, NSPort: 80}
	for i := range 50 {
		start := make(chan struct{})
		errs := make(chan error, 2)
		for _, l := range []*nat.Link{la, lb} {
			go func() { <-start; errs <- l.Publish(p) }()
		}
		close(start)
		e1, e2 := <-errs, <-errs
		won := 0
		for _, e := range []error{e1, e2} {
			switch {
			case e == nil:
				won++
			case !errors.Is(e, os.ErrExist):
				t.Fatalf("round %d: %v", i, e)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d links got the port", i, won)
		}
		winner := la
		if len(la.Ports()) == 0 {
			winner = lb
		}
		if seen, err := nstest.Echo(w.Inet, "203.0.113.2:8080"); err != nil || seen != "203.0.113.1" {
			t.Fatalf("round %d: the port: %q, %v", i, seen, err)
		}
		if err := winner.Unpublish(p); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPublishDuringReload: Publish and Unpublish race with firewall
// reloads (nft flush ruleset), which the guard answers by putting the
// live links' entries back. A port unpublished between the guard's look
// at the links and its commit must not come back: after the last
// Unpublish and one more reload, the ports map holds no entry, and the
// port can be published by another link. Under -race, the guard's read of
// the link's ports and Publish's write of them are a data race unless
// they are kept apart.
func TestPublishDuringReload(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "prl-")
	a, b := nstest.NewNS(t, "prl-a"), nstest.NewNS(t, "prl-b")
	la, err := nat.Config{HostNS: w.Host}.Connect(a, "up0", netip.MustParsePrefix("10.74.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()
	lb, err := nat.Config{HostNS: w.Host}.Connect(b, "up0", netip.MustParsePrefix("10.75.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	flush := func() { nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft", "flush", "ruleset") }
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(15 * time.Millisecond):
				flush()
			}
		}
	}()
	p := nat.Port{Protocol: "tcp", HostPort: 8080, NSPort: 80}
	for i := range 150 {
		if err := la.Publish(p); err != nil {
			t.Fatalf("round %d: %v", i, err) // ErrExist: the guard put back an unpublished port
		}
		// (ErrNotExist: the ruleset was flushed, and not restored yet.)
		if err := la.Unpublish(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	close(stop)
	<-done
	flush()
	time.Sleep(500 * time.Millisecond) // the guard looks every 20 ms
	out := nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft", "list", "map", "inet", "nsnet", "ports")
	if strings.Contains(out, "8080") {
		t.Errorf("an unpublished port came back with the reload:\n%s", out)
	}
	if err := lb.Publish(p); err != nil {
		t.Errorf("the port after A unpublished it: %v", err)
	}
	if len(la.Ports()) != 0 {
		t.Errorf("A's ports: %v", la.Ports())
	}
}

// TestPortsReserved: a port a socket of the host holds is refused, unless
// the caller reserves ports itself (Config.PortsReserved, as a container
// runtime that holds its ports bound does: podman's conmon); then the port
// is published, and reached from outside past the host's socket. A port
// of another link stays refused either way.
func TestPortsReserved(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "rsv-")
	a, b := nstest.NewNS(t, "rsv-a"), nstest.NewNS(t, "rsv-b")
	nstest.Listen(t, a, "0.0.0.0:80")
	var reservation net.Listener
	if err := w.Host.Do(func() (err error) { reservation, err = net.Listen("tcp", "203.0.113.2:8090"); return err }); err != nil {
		t.Fatal(err)
	}
	defer reservation.Close()
	port := []nat.Port{{Protocol: "tcp", HostAddr: netip.MustParseAddr("203.0.113.2"), HostPort: 8090, NSPort: 80}}
	if _, err := (nat.Config{HostNS: w.Host, Ports: port}).Connect(a, "up0", netip.MustParsePrefix("10.64.0.0/24")); !errors.Is(err, os.ErrExist) {
		t.Fatalf("Connect with the port held by a host socket: %v, want os.ErrExist", err)
	}
	la, err := nat.Config{HostNS: w.Host, Ports: port, PortsReserved: true}.Connect(a, "up0", netip.MustParsePrefix("10.64.0.0/24"))
	if err != nil {
		t.Fatalf("Connect with PortsReserved: %v", err)
	}
	defer la.Close()
	if seen, err := nstest.Echo(w.Inet, "203.0.113.2:8090"); err != nil || seen != "203.0.113.1" {
		t.Errorf("outside to the reserved, published port: %q %v", seen, err)
	}
	if _, err := (nat.Config{HostNS: w.Host, Ports: port, PortsReserved: true}).Connect(b, "up0", netip.MustParsePrefix("10.65.0.0/24")); !errors.Is(err, os.ErrExist) {
		t.Errorf("a second link on the same port with PortsReserved: %v, want os.ErrExist", err)
	}
}

// TestNoAnswerInAnothersName: the host's own connections to a namespace
// get their replies from that namespace's link, and from no other: a
// namespace that knows such a connection (the source the other namespace
// sees: an address of the host and a port) and sends a reply in the other
// one's name, from its address, must not reach the host's socket.
// Conntrack matches a reply whatever link it comes from. Two ways in: to
// a published 127.0.0.1 port (both namespaces have one, so route_localnet
// is on for both links and the kernel does not drop the packet as
// martian), and to the namespace's address directly.
func TestNoAnswerInAnothersName(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "lrl-")
	a, b := nstest.NewNS(t, "lrl-a"), nstest.NewNS(t, "lrl-b")
	// Each with a 127.0.0.1 port, 9054 and 9053.
	connect := func(ns *netns.Handle, i int) *nat.Link {
		l, err := nat.Config{HostNS: w.Host, Prefix6: netip.MustParsePrefix(fmt.Sprintf("fd00:%d::/64", 62+i)), Ports: []nat.Port{
			{Protocol: "udp", HostAddr: netip.MustParseAddr("127.0.0.1"), HostPort: uint16(9054 - i), NSPort: 53},
		}}.Connect(ns, "up0", netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/24", 62+i)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	connect(a, 0)
	lb := connect(b, 1)
	listen := func(ns *netns.Handle, addr string) net.PacketConn {
		var c net.PacketConn
		if err := ns.Do(func() (err error) { c, err = net.ListenPacket("udp", addr); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	b6 := lb.NSAddr6.Addr().String()
	server, server6 := listen(b, "10.63.0.2:53"), listen(b, "["+b6+"]:53")
	// The other namespace takes the first one's addresses, to send in its
	// name.
	nstest.Cmd(t, "ip", "-n", "lrl-a", "address", "add", "10.63.0.2/32", "dev", "eth0")
	nstest.Cmd(t, "ip", "-n", "lrl-a", "address", "add", b6+"/128", "dev", "eth0", "nodad")
	spoofer, spoofer6 := listen(a, "10.63.0.2:53"), listen(a, "["+b6+"]:53")
	read := func(c net.Conn) string {
		buf := make([]byte, 64)
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, _ := c.Read(buf)
		return string(buf[:n])
	}
	for _, to := range []string{"127.0.0.1:9053", "10.63.0.2:53", "[" + b6 + "]:53"} {
		server, spoofer := server, spoofer
		if strings.HasPrefix(to, "[") {
			server, spoofer = server6, spoofer6
		}
		var client net.Conn
		if err := w.Host.Do(func() (err error) { client, err = net.Dial("udp", to); return err }); err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		if _, err := client.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		server.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, from, err := server.ReadFrom(buf)
		if err != nil {
			t.Fatalf("host to %s: %v", to, err)
		}
		// Control: the namespace's own reply arrives.
		server.WriteTo([]byte("reply"), from)
		if got := read(client); got != "reply" {
			t.Fatalf("host to %s: the namespace's reply: got %q", to, got)
		}
		for range 5 {
			if _, err := spoofer.WriteTo([]byte("spoofed"), from); err != nil {
				t.Fatal(err)
			}
		}
		if got := read(client); got != "" {
			t.Errorf("host to %s: a reply sent by another namespace in the first one's name reached the host's socket: %q", to, got)
		}
		server.WriteTo([]byte("reply"), from)
		if got := read(client); got != "reply" {
			t.Errorf("host to %s: the namespace's reply after the attempt: got %q", to, got)
		}
	}
}
