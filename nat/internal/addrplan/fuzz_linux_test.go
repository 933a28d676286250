package addrplan

import (
	"fmt"
	"net/netip"
	"testing"
)

// FuzzAddresses: whatever ValidPrefix and Addresses accept is an IPv4
// prefix with two distinct host addresses inside it (or a point-to-point
// pair).
func FuzzAddresses(f *testing.F) {
	f.Add(uint32(0x0a000000), 24, uint32(0), uint32(0))
	f.Add(uint32(0x0a000000), 30, uint32(0x0a000001), uint32(0x0a000002))
	f.Add(uint32(0x7f000000), 8, uint32(0), uint32(0))
	f.Fuzz(func(t *testing.T, a uint32, bits int, host, nsa uint32) {
		addr := func(v uint32) netip.Addr {
			return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		}
		cidr := netip.PrefixFrom(addr(a), bits)
		var hostAddr, nsAddr netip.Addr
		if host != 0 {
			hostAddr = addr(host)
		}
		if nsa != 0 {
			nsAddr = addr(nsa)
		}
		if ValidPrefix(cidr) != nil {
			return
		}
		h, n, err := Addresses(cidr, hostAddr, nsAddr)
		if err != nil {
			return
		}
		if cidr.Bits() == 32 {
			// Point-to-point: the namespace's address is the prefix, the
			// host end's outside it.
			if n != cidr.Addr() || h == n || cidr.Contains(h) || !h.IsValid() {
				panic(fmt.Sprintf("accepted %v with %v and %v", cidr, h, n))
			}
			return
		}
		if !cidr.Contains(h) || !cidr.Contains(n) || h == n || h == cidr.Addr() || n == lastAddr(cidr) || cidr.Bits() > 30 {
			panic(fmt.Sprintf("accepted %v with %v and %v", cidr, h, n))
		}
	})
}
