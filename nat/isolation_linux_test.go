package nat_test

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"golang.org/x/sys/unix"
)

// TestIsolation checks the four home-router properties with real traffic:
// out and back works; siblings cannot reach each other (unless both allow
// it); nothing unsolicited comes in even when the outside routes the
// prefixes to the uplink; spoofed sources are dropped.
func TestIsolation(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "iso-")
	inet := func(args ...string) string {
		return nstest.Cmd(t, "ip", append([]string{"netns", "exec", w.InetName}, args...)...)
	}
	// The outside knows a way to both prefixes: only the rules stop it.
	inet("ip", "route", "add", "10.0.0.0/16", "via", "203.0.113.2")
	cfg := nat.Config{HostNS: w.Host}
	ns1 := nstest.NewNS(t, "iso-ns1")
	ns2 := nstest.NewNS(t, "iso-ns2")
	l1, err := cfg.Connect(ns1, "up0", netip.MustParsePrefix("10.0.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	l2, err := cfg.Connect(ns2, "up0", netip.MustParsePrefix("10.0.2.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	nstest.Listen(t, ns1, "0.0.0.0:9000")
	nstest.Listen(t, ns2, "0.0.0.0:9000")
	nstest.Listen(t, w.Inet, "203.0.113.1:9000")

	// 1. Out and back.
	if from, err := nstest.Echo(ns1, "203.0.113.1:9000"); err != nil || from != "203.0.113.2" {
		t.Errorf("ns1 -> outside: %q %v", from, err)
	}
	// 2. Siblings are isolated both ways (the host ends' addresses are
	// the host's own, reached through INPUT, so they stay reachable).
	if nstest.Ping(t, "iso-ns1", "10.0.2.2") || nstest.Ping(t, "iso-ns2", "10.0.1.2") {
		t.Error("siblings reach each other")
	}
	if _, err := nstest.Echo(ns1, "10.0.2.2:9000"); err == nil {
		t.Error("TCP between siblings")
	}
	// 3. Nothing unsolicited from outside, though it has a route.
	if nstest.Ping(t, w.InetName, "10.0.1.2") {
		t.Error("outside pings into ns1")
	}
	if _, err := nstest.Echo(w.Inet, "10.0.1.2:9000"); err == nil {
		t.Error("outside opens TCP into ns1")
	}
	// 4. Spoofed sources are dropped: count what reaches the outside with
	// a source that is not ns1's prefix.
	inet("nft", "add table ip watch; add chain ip watch in { type filter hook input priority 0; }; add rule ip watch in ip saddr 192.0.2.66 counter; add rule ip watch in ip saddr 203.0.113.2 counter")
	nstest.Cmd(t, "ip", "netns", "exec", "iso-ns1", "ip", "addr", "add", "192.0.2.66/32", "dev", "eth0")
	nstest.CmdErr("ip", "netns", "exec", "iso-ns1", "ping", "-c2", "-i0.2", "-W1", "-I", "192.0.2.66", "203.0.113.1")
	nstest.Ping(t, "iso-ns1", "203.0.113.1") // control: legit traffic is counted
	counters := inet("nft", "list", "table", "ip", "watch")
	if !strings.Contains(counters, "ip saddr 192.0.2.66 counter packets 0 ") {
		t.Errorf("spoofed packets reached the outside:\n%s", counters)
	}
	if strings.Contains(counters, "ip saddr 203.0.113.2 counter packets 0 ") {
		t.Errorf("control: legit traffic did not reach the outside:\n%s", counters)
	}
	// A sibling's source is spoofed too, though its prefix is masqueraded
	// out of the same uplink: UDP to port 9999 from ns2's 10.0.2.66 sent by
	// ns1 must not get out; the same from ns1's own address does (port
	// 9998, the control).
	inet("nft", "add rule ip watch in udp dport 9999 counter; add rule ip watch in udp dport 9998 counter")
	nstest.Cmd(t, "ip", "netns", "exec", "iso-ns1", "ip", "addr", "add", "10.0.2.66/32", "dev", "eth0")
	send := func(from string, port int) {
		err := ns1.Do(func() error {
			// Unconnected: the outside's port unreachable replies do not
			// fail the next write.
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(from)})
			if err != nil {
				return err
			}
			defer c.Close()
			for range 3 {
				if _, err := c.WriteToUDP([]byte("probe"), &net.UDPAddr{IP: net.ParseIP("203.0.113.1"), Port: port}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	send("10.0.2.66", 9999)
	send("10.0.1.2", 9998)
	// The control's packets went the same way after the probes: once they
	// are counted (or after 5 s), the probes had their chance too.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		counters = inet("nft", "list", "table", "ip", "watch")
		if !strings.Contains(counters, "udp dport 9998 counter packets 0 ") || time.Now().After(deadline) {
			break
		}
	}
	if !strings.Contains(counters, "udp dport 9999 counter packets 0 ") {
		t.Errorf("packets with a sibling's source reached the outside:\n%s", counters)
	}
	if strings.Contains(counters, "udp dport 9998 counter packets 0 ") {
		t.Errorf("control: UDP from ns1's own address did not reach the outside:\n%s", counters)
	}
}

// TestAllowSiblings: links that both allow it reach each other; a third
// that does not stays isolated.
func TestAllowSiblings(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "sib-")
	open := nat.Config{HostNS: w.Host, AllowSiblings: true}
	var names []string
	for i, c := range []nat.Config{open, open, {HostNS: w.Host}} {
		name := "sib-ns" + string(rune('1'+i))
		ns := nstest.NewNS(t, name)
		l, err := c.Connect(ns, "up0", netip.MustParsePrefix("10.0."+string(rune('1'+i))+".0/24"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		names = append(names, name)
	}
	if !nstest.Ping(t, names[0], "10.0.2.2") || !nstest.Ping(t, names[1], "10.0.1.2") {
		t.Error("allowed siblings cannot reach each other")
	}
	// A sibling's ICMP error about the other's connection passes (the
	// connection's mark is the other link's): a datagram to a closed port
	// is refused at once.
	if ns, err := netns.Open(names[0]); err != nil {
		t.Fatal(err)
	} else {
		defer ns.Close()
		var c net.Conn
		if err := ns.Do(func() (err error) { c, err = net.Dial("udp", "10.0.2.2:9"); return err }); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("x"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 8)); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("a datagram to a sibling's closed port: %v, want connection refused", err)
		}
	}
	if nstest.Ping(t, names[0], "10.0.3.2") || nstest.Ping(t, names[2], "10.0.1.2") {
		t.Error("a link without AllowSiblings is reachable")
	}
	if !nstest.Ping(t, names[2], "203.0.113.1") {
		t.Error("third link cannot reach out")
	}
}

// TestInvalidPacketsDropped: packets of a link that conntrack does not
// track as a connection (a lone TCP RST, ct state invalid) get no NAT, so
// forwarded they would reach the outside with the namespace's private
// source. Untrusted code in the namespace sends them through a raw socket;
// the outside host's leak counter (see nstest.NewWorld) must stay at 0,
// and a real connection still works.
func TestInvalidPacketsDropped(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "inv-")
	ns := nstest.NewNS(t, "inv-ns")
	l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix("10.80.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pkt := make([]byte, 40)
	pkt[0], pkt[8], pkt[9] = 0x45, 64, unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(pkt[2:], 40)
	copy(pkt[12:], []byte{10, 80, 0, 2})
	copy(pkt[16:], []byte{203, 0, 113, 1})
	binary.BigEndian.PutUint16(pkt[20:], 40001) // source port
	binary.BigEndian.PutUint16(pkt[22:], 80)
	pkt[32] = 5 << 4 // data offset
	pkt[33] = 0x04   // RST
	binary.BigEndian.PutUint16(pkt[34:], 1024)
	err = ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for range 20 {
			if err := unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: [4]byte{203, 0, 113, 1}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	if seen, err := nstest.Echo(ns, "203.0.113.1:8080"); err != nil || seen != "203.0.113.2" {
		t.Errorf("a real connection after the invalid packets: %q, %v", seen, err)
	}
}
