package nstest

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsnet/nsnet/addr"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/route"
	"github.com/nsnet/nsnet/veth"
)

// World is a fake host and internet inside the private world: the outside
// host 203.0.113.1/24 and 2001:db8::1/64 (documentation addresses) in a
// namespace of its own, and the host's uplink up0 with 203.0.113.2/24 and
// 2001:db8::2/64, a veth pair between them. The outside host has no route
// back to any namespace's prefix, so only NAT brings replies back.
type World struct {
	Host     *netns.Handle // nil when the world's host is the current namespace
	Inet     *netns.Handle // the outside host's namespace
	HostName string        // "" when the host is the current namespace
	InetName string

	Uplink      string       // the host's uplink: "up0"
	UplinkAddr  netip.Prefix // its address: 203.0.113.2/24
	Outside     netip.Addr   // the outside host: 203.0.113.1
	UplinkAddr6 netip.Prefix // its IPv6 address: 2001:db8::2/64
	Outside6    netip.Addr   // the outside host's IPv6 address: 2001:db8::1

	allowed atomic.Int64 // leaks a test measured and accounted for itself (AllowLeaks)
}

// Leaks returns how many packets with a private source have reached the
// outside host so far (see NewWorld), -1 if the counter cannot be read.
func (w *World) Leaks() int { return leaked(w) }

// AllowLeaks tells NewWorld's check that n packets with a private source
// reaching the outside were expected: a test that measures a window in
// which the kernel cannot help it (and asserts on the rest itself) says
// so, instead of failing at cleanup.
func (w *World) AllowLeaks(n int) { w.allowed.Store(int64(n)) }

// BuildWorld builds a World. With a non-empty hostName the host is a new
// named namespace; with "" it is the current namespace (a program that
// Isolate re-executed). The outside host's namespace is called inetName.
// Call it inside a private world only (Main, Isolate): with "" it adds the
// uplink to the current namespace.
func BuildWorld(hostName, inetName string) (w *World, err error) {
	w = &World{HostName: hostName, InetName: inetName, Uplink: "up0",
		UplinkAddr: netip.MustParsePrefix("203.0.113.2/24"), Outside: netip.MustParseAddr("203.0.113.1"),
		UplinkAddr6: netip.MustParsePrefix("2001:db8::2/64"), Outside6: netip.MustParseAddr("2001:db8::1")}
	defer func() {
		if err != nil {
			w.Close()
		}
	}()
	if hostName != "" {
		if w.Host, err = netns.New(hostName); err != nil {
			return nil, err
		}
		if err = veth.SetUp(w.Host, "lo"); err != nil {
			return nil, err
		}
	}
	if w.Inet, err = netns.New(inetName); err != nil {
		return nil, err
	}
	// IPv6 link-local addresses usable at once too: without duplicate
	// address detection on the world's own links, a host whose uplink's
	// link-local address is still tentative would send neighbour
	// solicitations from no address for forwarded packets (a real host's
	// has been ready for long).
	for _, h := range []*netns.Handle{w.Host, w.Inet} {
		if h != nil || hostName == "" {
			err := h.Do(func() error {
				return os.WriteFile("/proc/sys/net/ipv6/conf/default/accept_dad", []byte("0\n"), 0)
			})
			if err != nil {
				return nil, err
			}
		}
	}
	for _, step := range []func() error{
		func() error { return veth.SetUp(w.Inet, "lo") },
		func() error {
			return veth.Create(w.Host, veth.Config{Name: w.Uplink, PeerName: "inet0", PeerNS: w.Inet, Up: true})
		},
		func() error { return addr.Add(w.Host, w.Uplink, w.UplinkAddr) },
		func() error { return addr.Add(w.Inet, "inet0", netip.PrefixFrom(w.Outside, 24)) },
		// IPv6 usable at once: no duplicate address detection.
		func() error { return addr.Config{NoDAD: true}.Add(w.Host, w.Uplink, w.UplinkAddr6) },
		func() error { return addr.Config{NoDAD: true}.Add(w.Inet, "inet0", netip.PrefixFrom(w.Outside6, 64)) },
	} {
		if err = step(); err != nil {
			return nil, err
		}
	}
	// The kernel adds an IPv6 address's local route from a work queue,
	// after the address is listed: wait until the host routes its uplink's
	// address locally (what nat reads as the uplink having a global IPv6
	// address), as a real host's long-standing address is.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		r, err := route.Get(w.Host, w.UplinkAddr6.Addr())
		if err == nil && r.Type == 2 { // RTN_LOCAL
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the uplink's IPv6 address %v is not routed locally after 5 s: %v", w.UplinkAddr6, err)
		}
	}
	return w, nil
}

// Close removes the world's namespaces (and with them its links).
func (w *World) Close() error {
	var errs []error
	if w.Host == nil && w.Inet != nil {
		if err := veth.Delete(nil, w.Uplink); err != nil {
			errs = append(errs, err)
		}
	}
	for _, x := range []struct {
		h    *netns.Handle
		name string
	}{{w.Host, w.HostName}, {w.Inet, w.InetName}} {
		if x.h != nil {
			x.h.Close()
			errs = append(errs, netns.Delete(x.name))
		}
	}
	return errors.Join(errs...)
}

// NewWorld builds a World whose namespaces are called prefix+"host" and
// prefix+"inet"; it is removed when t ends. It calls Require.
//
// Where nft is installed, the outside host counts the packets that arrive
// with a private source address (RFC 1918, shared address space, IPv6
// unique local addresses): a namespace's packet that left the uplink
// un-masqueraded. The test fails at its end if there was one.
func NewWorld(t testing.TB, prefix string) *World {
	t.Helper()
	Require(t)
	w, err := BuildWorld(prefix+"host", prefix+"inet")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	if _, err := exec.LookPath("nft"); err == nil {
		out, err := exec.Command("ip", "netns", "exec", w.InetName, "nft",
			"add table inet leakwatch; add chain inet leakwatch in { type filter hook prerouting priority -300; }; "+
				"add rule inet leakwatch in ip saddr { 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10 } counter; "+
				"add rule inet leakwatch in ip6 saddr fc00::/7 counter").CombinedOutput()
		if err != nil {
			t.Fatalf("leak counter: %v: %s", err, out)
		}
		t.Cleanup(func() {
			if n := leaked(w); n != 0 && int64(n) > w.allowed.Load() {
				t.Errorf("%d packets with a private source reached the outside host (un-masqueraded)", n)
			}
		})
	}
	return w
}

var packets = regexp.MustCompile(`counter packets (\d+)`)

// leaked reads the leak counters of w's outside host; -1 if it cannot.
func leaked(w *World) int {
	out, err := exec.Command("ip", "netns", "exec", w.InetName, "nft", "list", "chain", "inet", "leakwatch", "in").Output()
	ms := packets.FindAllSubmatch(out, -1)
	if err != nil || len(ms) != 2 {
		return -1
	}
	total := 0
	for _, m := range ms {
		n, _ := strconv.Atoi(string(m[1]))
		total += n
	}
	return total
}

// NewNS makes a named namespace, removed (handle closed, name deleted)
// when t ends. It calls Require.
func NewNS(t testing.TB, name string) *netns.Handle {
	t.Helper()
	Require(t)
	h, err := netns.New(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close()
		netns.Delete(name)
	})
	return h
}

// Ping reports whether "ping -c1 -W1 dst" from inside the named namespace
// succeeds (-6 is added for an IPv6 dst by ping itself).
func Ping(t testing.TB, nsName, dst string) bool {
	t.Helper()
	RequireCmd(t, "ping")
	_, err := CmdErr("ip", "netns", "exec", nsName, "ping", "-c1", "-W1", "-q", dst)
	return err == nil
}
