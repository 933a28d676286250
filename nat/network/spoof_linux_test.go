package network_test

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat/network"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"golang.org/x/sys/unix"
)

// sendFrames sends raw Ethernet frames out of ifName inside ns.
func sendFrames(t *testing.T, ns *netns.Handle, ifName string, frames ...[]byte) {
	t.Helper()
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifName)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for _, f := range frames {
			if err := unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func eth(dst, src net.HardwareAddr, typ uint16, payload []byte) []byte {
	b := append(append(append([]byte{}, dst...), src...), byte(typ>>8), byte(typ))
	return append(b, payload...)
}

func csum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func udp4(src, dst netip.Addr, dport uint16) []byte {
	u := []byte{0x30, 0x39, byte(dport >> 8), byte(dport), 0, 12, 0, 0, 'p', 'i', 'n', 'g'}
	h := []byte{0x45, 0, 0, byte(20 + len(u)), 0, 1, 0, 0, 64, unix.IPPROTO_UDP, 0, 0}
	h = append(append(h, src.AsSlice()...), dst.AsSlice()...)
	binary.BigEndian.PutUint16(h[10:], csum(h, 0))
	return append(h, u...)
}

// ip6 is an IPv6 packet of next header nh with a correct upper-layer
// checksum at csumAt of payload.
func ip6(src, dst netip.Addr, nh byte, payload []byte, csumAt int, hops byte) []byte {
	h := []byte{0x60, 0, 0, 0, byte(len(payload) >> 8), byte(len(payload)), nh, hops}
	h = append(append(h, src.AsSlice()...), dst.AsSlice()...)
	pseudo := append(append(append([]byte{}, src.AsSlice()...), dst.AsSlice()...), 0, 0, byte(len(payload)>>8), byte(len(payload)), 0, 0, 0, nh)
	p := append([]byte{}, payload...)
	binary.BigEndian.PutUint16(p[csumAt:], csum(append(pseudo, p...), 0))
	return append(h, p...)
}

func udp6(src, dst netip.Addr, dport uint16) []byte {
	u := []byte{0x30, 0x39, byte(dport >> 8), byte(dport), 0, 12, 0, 0, 'p', 'i', 'n', 'g'}
	return ip6(src, dst, unix.IPPROTO_UDP, u, 6, 64)
}

// na is a neighbour advertisement for target from src, with its
// target link-layer address option.
func na(src, dst, target netip.Addr, mac net.HardwareAddr) []byte {
	m := append([]byte{136, 0, 0, 0, 0x60, 0, 0, 0}, target.AsSlice()...)
	m = append(append(m, 2, 1), mac...)
	return ip6(src, dst, unix.IPPROTO_ICMPV6, m, 2, 255)
}

func ra(src netip.Addr) []byte {
	m := []byte{134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}
	return ip6(src, netip.MustParseAddr("ff02::1"), unix.IPPROTO_ICMPV6, m, 2, 255)
}

func arpReply(sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	b := []byte{0, 1, 8, 0, 6, 4, 0, 2}
	b = append(append(b, sha...), spa.AsSlice()...)
	return append(append(b, tha...), tpa.AsSlice()...)
}

// TestNoSpoofing: a member sends frames with another member's Ethernet
// and IP addresses, ARP replies and neighbour advertisements claiming
// another's address, a router advertisement, a VLAN-tagged frame, and a
// datagram to the outside with another member's source. Counted at the
// receivers (a member's ingress, the outside host): none arrives, while
// the same frames with the sender's own addresses (the controls) do.
func TestNoSpoofing(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "nsp-")
	n := newNetwork(t, network.Config{HostNS: w.Host, Uplink: w.Uplink,
		Prefix: netip.MustParsePrefix("10.78.0.0/24"), Prefix6: netip.MustParsePrefix("fd00:78::/64"), NoDNS: true})
	_, srv := attach(t, n, "nsp-srv", network.MemberConfig{Name: "server"})
	_, vic := attach(t, n, "nsp-vic", network.MemberConfig{Name: "victim"})
	attNS, att := attach(t, n, "nsp-att", network.MemberConfig{Name: "attacker"})

	hex6 := func(a netip.Addr) string { return "0x" + hex.EncodeToString(a.AsSlice()) }
	rules := []string{
		"udp dport 7001 counter comment \"own4\"",
		"udp dport 7002 counter comment \"spoofip4\"",
		"udp dport 7003 counter comment \"spoofmac4\"",
		"udp dport 7004 counter comment \"outsideip4\"",
		"udp dport 7005 counter comment \"own6\"",
		"udp dport 7006 counter comment \"spoofip6\"",
		"ether type 8021q counter comment \"vlan\"",
		fmt.Sprintf("arp operation reply arp saddr ip %s counter comment \"arpown\"", att.Addr),
		fmt.Sprintf("arp operation reply arp saddr ip %s counter comment \"arpspoof\"", srv.Addr),
		fmt.Sprintf("icmpv6 type nd-neighbor-advert @th,64,128 %s counter comment \"naown\"", hex6(att.Addr6)),
		fmt.Sprintf("icmpv6 type nd-neighbor-advert @th,64,128 %s counter comment \"naspoof\"", hex6(srv.Addr6)),
		"icmpv6 type nd-router-advert counter comment \"ra\"",
	}
	script := "add table netdev count\nadd chain netdev count in { type filter hook ingress device eth0 priority 0; }\n"
	for _, r := range rules {
		script += "add rule netdev count in " + r + "\n"
	}
	if out, err := nstest.CmdErr("ip", "netns", "exec", "nsp-vic", "sh", "-c", "nft -f - <<'EOF'\n"+script+"EOF\n"); err != nil {
		t.Fatalf("receiver's counters: %v: %s", err, out)
	}
	outside := "add table inet count\nadd chain inet count in { type filter hook prerouting priority -300; }\n" +
		"add rule inet count in udp dport 7010 counter comment \"outown\"\nadd rule inet count in udp dport 7011 counter comment \"outspoof\"\n"
	if out, err := nstest.CmdErr("ip", "netns", "exec", w.InetName, "sh", "-c", "nft -f - <<'EOF'\n"+outside+"EOF\n"); err != nil {
		t.Fatalf("outside's counters: %v: %s", err, out)
	}
	gwMAC := func() net.HardwareAddr {
		var mac net.HardwareAddr
		w.Host.Do(func() error {
			ifi, err := net.InterfaceByName(n.Bridge)
			if err == nil {
				mac = ifi.HardwareAddr
			}
			return err
		})
		return mac
	}()

	v, a, s := vic.MAC, att.MAC, srv.MAC
	vlan := append([]byte{0, 0, 0x08, 0x00}, udp4(att.Addr, vic.Addr, 7001)...)
	frames := [][]byte{
		eth(v, a, 0x0800, udp4(att.Addr, vic.Addr, 7001)),
		eth(v, a, 0x0800, udp4(srv.Addr, vic.Addr, 7002)),
		eth(v, s, 0x0800, udp4(srv.Addr, vic.Addr, 7003)),
		eth(v, a, 0x0800, udp4(w.Outside, vic.Addr, 7004)),
		eth(v, a, 0x86dd, udp6(att.Addr6, vic.Addr6, 7005)),
		eth(v, a, 0x86dd, udp6(srv.Addr6, vic.Addr6, 7006)),
		eth(v, a, 0x8100, vlan),
		eth(v, a, 0x0806, arpReply(a, att.Addr, v, vic.Addr)),
		eth(v, a, 0x0806, arpReply(a, srv.Addr, v, vic.Addr)),
		eth(v, a, 0x0806, arpReply(s, srv.Addr, v, vic.Addr)),
		eth(v, a, 0x86dd, na(att.Addr6, vic.Addr6, att.Addr6, a)),
		eth(v, a, 0x86dd, na(att.Addr6, vic.Addr6, srv.Addr6, a)),
		eth(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, a, 0x86dd, ra(att.Addr6)),
		eth(gwMAC, a, 0x0800, udp4(att.Addr, w.Outside, 7010)),
		eth(gwMAC, a, 0x0800, udp4(srv.Addr, w.Outside, 7011)),
	}
	check := func(what string, rounds int) {
		t.Helper()
		got := count(t, "nsp-vic")
		for k, v := range countIn(t, w.InetName, "inet") {
			got[k] = v
		}
		for _, k := range []string{"own4", "own6", "arpown", "naown", "outown"} {
			if got[k] < rounds { // (at least: the attacker's kernel answers the victim's questions too)
				t.Errorf("%s: control %s: %d of %d arrived (the test's frames are wrong)", what, k, got[k], rounds)
			}
		}
		for _, k := range []string{"spoofip4", "spoofmac4", "outsideip4", "spoofip6", "vlan", "arpspoof", "naspoof", "ra", "outspoof"} {
			if got[k] != 0 {
				t.Errorf("%s: spoofed %s: %d arrived", what, k, got[k])
			}
		}
		t.Logf("%s: counted at the receivers: %v", what, got)
	}
	for range 3 {
		sendFrames(t, attNS, "eth0", frames...)
	}
	time.Sleep(300 * time.Millisecond)
	check("spoofing", 3)

	// A firewall reload takes the bridge table with it: the guard makes it
	// again with the members' entries.
	nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft", "flush", "ruleset")
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := nstest.CmdErr("ip", "netns", "exec", w.HostName, "nft", "list", "set", "bridge", "nsnet", "addrs")
		out2, _ := nstest.CmdErr("ip", "netns", "exec", w.HostName, "nft", "list", "set", "inet", "nsnet", "masq")
		if strings.Count(out, "nsnet owner=") == 3 && strings.Count(out2, "nsnet owner=") == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridge table not restored after a flush:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for range 3 {
		sendFrames(t, attNS, "eth0", frames...)
	}
	time.Sleep(300 * time.Millisecond)
	check("after nft flush ruleset", 6)
	if t.Failed() {
		t.Log(nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft", "list", "table", "bridge", "nsnet"))
	}
}
