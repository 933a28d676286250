package nat_test

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// BenchmarkNewConnect is the set-up of one namespace as a user writes it:
// netns.New + nat.Connect. BenchmarkCloseDelete is its tear-down.
// The program in bench/ (go run ./bench) compares both with the tutorial's
// shell commands, side by side.
func BenchmarkNewConnect(b *testing.B) {
	nstest.Require(b)
	w := nstest.NewWorld(b, "bn-")
	cfg := nat.Config{HostNS: w.Host}
	type made struct {
		name string
		ns   *netns.Handle
		l    *nat.Link
	}
	var all []made
	i := 0
	for b.Loop() {
		name := fmt.Sprintf("bn-%d", i)
		ns, err := netns.New(name)
		if err != nil {
			b.Fatal(err)
		}
		l, err := cfg.Connect(ns, "up0", netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24))
		if err != nil {
			b.Fatal(err)
		}
		all = append(all, made{name, ns, l})
		i++
	}
	b.StopTimer()
	for _, m := range all {
		m.l.Close()
		m.ns.Close()
		netns.Delete(m.name)
	}
}

// BenchmarkConnectClose: one Connect and Close of a given prefix ("given")
// or of one the pool supplies ("auto"), beside 10 live links
// (NSNET_BENCH_LINKS: that many).
func BenchmarkConnectClose(b *testing.B) {
	for _, auto := range []bool{false, true} {
		name := map[bool]string{false: "given", true: "auto"}[auto]
		b.Run(name, func(b *testing.B) { benchConnectClose(b, auto) })
	}
}

func benchConnectClose(b *testing.B, auto bool) {
	nstest.Require(b)
	w := nstest.NewWorld(b, "bc-")
	ns, err := netns.NewAnonymous()
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	cfg := nat.Config{HostNS: w.Host}
	n, err := strconv.Atoi(os.Getenv("NSNET_BENCH_LINKS"))
	if err != nil {
		n = 10
	}
	for i := range n {
		other, err := netns.NewAnonymous()
		if err != nil {
			b.Fatal(err)
		}
		defer other.Close()
		l, err := cfg.Connect(other, "up0", netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(1 + i/256), byte(i), 0}), 24))
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
	}
	prefix := netip.MustParsePrefix("10.0.0.0/24")
	if auto {
		prefix = netip.Prefix{}
	}
	for b.Loop() {
		l, err := cfg.Connect(ns, "up0", prefix)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRelayQuery: one DNS query over UDP from a connected namespace,
// through the link's relay, to a resolver on the host's loopback, and its
// answer back.
func BenchmarkRelayQuery(b *testing.B) {
	nstest.Require(b)
	w := nstest.NewWorld(b, "brq-")
	loopbackResolver(b, w, netip.MustParseAddr("127.0.0.1"), map[string]netip.Addr{"www.test": netip.MustParseAddr("203.0.113.1")})
	ns := nstest.NewNS(b, "brq-ns")
	l, err := nat.Config{HostNS: w.Host, DNS: nat.DNSRelay}.Connect(ns, "up0", netip.MustParsePrefix("10.82.0.0/24"))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	c, err := ns.Dial("udp", "10.82.0.1:53")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	q, a := query(), make([]byte, 512)
	for b.Loop() {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(q); err != nil {
			b.Fatal(err)
		}
		if n, err := c.Read(a); err != nil || n < 12 || a[0] != q[0] || a[1] != q[1] {
			b.Fatalf("answer % x: %v", a[:n], err)
		}
	}
}
