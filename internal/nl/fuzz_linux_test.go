package nl

import (
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Seeds are messages this package builds; the fuzzers check that decoding
// never panics on anything and that what decodes keeps its invariants.

func FuzzDecodeLink(f *testing.F) {
	f.Add(NewVeth(Veth{Name: "a", PeerName: "b", PeerNSFd: 3, MTU: 1500, Up: true, Index: 5, PeerIndex: 6}).Data)
	f.Add(SetForwarding(3, true).Data)
	f.Add(SetAlias(4, "nsnet pid=1 start=2").Data)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := DecodeLink(b)
		if err == nil && l.Attributes == nil {
			t.Fatal("decoded link without attributes")
		}
		Forwarding(b)
	})
}

func FuzzDecodeRoute(f *testing.F) {
	f.Add(RouteMessage(RouteSpec{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.0.0.1")}))
	f.Add(RouteMessage(RouteSpec{Dst: netip.MustParsePrefix("fd00::/64"), LinkIndex: 3, Table: 1000}))
	f.Add(GetRoute(netip.MustParseAddr("203.0.113.9")).Data)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRoute(b)
		if err == nil && r.Dst.IsValid() && r.Dst.Bits() > r.Dst.Addr().BitLen() {
			t.Fatalf("prefix %v longer than its address", r.Dst)
		}
	})
}

func FuzzEachMessage(f *testing.F) {
	f.Add([]byte{16, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{20, 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		total := 0
		eachMessage(b, func(typ, flags uint16, body []byte) { total += unix.NLMSG_HDRLEN + len(body) })
		if total > len(b) {
			t.Fatalf("messages of %d bytes out of a %d-byte datagram", total, len(b))
		}
	})
}

func FuzzCheckIfName(f *testing.F) {
	for _, s := range []string{"eth0", "", ".", "a/b", "sixteen-bytes-xx", "a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if CheckIfName(name) == nil && (name == "" || len(name) > MaxIfNameLen || (strings.ContainsAny(name, "/: \x00%\n\t") || strings.IndexByte(name, 0xa0) >= 0) || name == "." || name == "..") {
			t.Fatalf("accepted %q", name)
		}
	})
}
