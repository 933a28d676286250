package addrplan

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/hostview"
	"github.com/nsnet/nsnet/nat/internal/naterr"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"golang.org/x/sys/unix"
)

// invalid is an error matching naterr.ErrInvalidConfig (nat.ErrInvalidConfig).
func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", naterr.ErrInvalidConfig, fmt.Sprintf(format, a...))
}

// Network is one family's network of a link: its prefix, the two
// addresses, and whether it leaves routed (not masqueraded).
type Network struct {
	Prefix   netip.Prefix
	Host, NS netip.Addr
	Routed   bool
}

func (n Network) Fam() byte { return nftset.FamilyOf(n.Prefix.Addr()) }

// HostAddr and nsAddr are the two addresses with the prefix's length.
func (n Network) HostAddr() netip.Prefix { return netip.PrefixFrom(n.Host, n.Prefix.Bits()) }
func (n Network) NSAddr() netip.Prefix   { return netip.PrefixFrom(n.NS, n.Prefix.Bits()) }

// PointToPoint tells a network of one address (/32, /128): the
// namespace's, with the host end's (its gateway, which many links may
// share) outside it, each the other's peer, as CNI's ptp plugin does.
func (n Network) PointToPoint() bool { return n.Prefix.Bits() == n.Prefix.Addr().BitLen() }

// AddHost and AddNS are the requests that add the host end's address and
// the namespace's. An IPv4 point-to-point address
// is one with a peer (its route to the peer comes with it); an IPv6 one
// is the address and a route to the peer, since IPv6 adds a peer's route
// only once the link is ready, after its carrier, and the namespace's
// default route needs it at once.
func (n Network) AddHost(index int) []nl.Request { return n.add(index, n.Host, n.NS) }
func (n Network) AddNS(index int) []nl.Request   { return n.add(index, n.NS, n.Host) }

func (n Network) add(index int, local, peer netip.Addr) []nl.Request {
	switch {
	case !n.PointToPoint():
		return []nl.Request{nl.NewAddr(index, netip.PrefixFrom(local, n.Prefix.Bits()), AddrFlags(n), false)}
	case local.Is4():
		return []nl.Request{nl.NewPeerAddr(index, local, peer, 0)}
	}
	return []nl.Request{nl.NewAddr(index, netip.PrefixFrom(local, 128), AddrFlags(n), false), nl.NewRoute(PeerRoute(index, peer), false)}
}

// PeerRoute is the route to a point-to-point peer through link index.
func PeerRoute(index int, peer netip.Addr) nl.RouteSpec {
	return nl.RouteSpec{Dst: netip.PrefixFrom(peer, peer.BitLen()), LinkIndex: index, Protocol: unix.RTPROT_BOOT,
		Scope: unix.RT_SCOPE_LINK, Type: unix.RTN_UNICAST}
}

// Networks are a link's networks, IPv4 first.
type Networks []Network

func (ns Networks) Prefixes() []netip.Prefix {
	var ps []netip.Prefix
	for _, n := range ns {
		ps = append(ps, n.Prefix)
	}
	return ps
}

func (ns Networks) Families() []byte {
	var fams []byte
	for _, n := range ns {
		fams = append(fams, n.Fam())
	}
	return fams
}

func (ns Networks) RoutedFams() []byte {
	var fams []byte
	for _, n := range ns {
		if n.Routed {
			fams = append(fams, n.Fam())
		}
	}
	return fams
}

// Need is what the networks need of the host (see hostview.View.Uplink),
// their prefixes checked against its routes with checkOverlap.
func (ns Networks) Need(uplink string, checkOverlap bool) hostview.Need {
	need := hostview.Need{Uplink: uplink, DefaultFam: ns[0].Fam()}
	if checkOverlap {
		need.Prefixes = ns.Prefixes()
	}
	for _, n := range ns {
		need.Masq4 = need.Masq4 || !n.Routed && n.Fam() == unix.NFPROTO_IPV4
		need.Masq6 = need.Masq6 || !n.Routed && n.Fam() == unix.NFPROTO_IPV6
	}
	return need
}

// Of returns the network of family fam, if the link has one.
// CheckMTU checks a link's MTU (0: the kernel's default) for its networks.
func (ns Networks) CheckMTU(mtu int) error {
	if mtu != 0 && (mtu < 576 || mtu > 65535) {
		return invalid("MTU %d outside 576..65535", mtu)
	}
	if _, ok := ns.Of(unix.NFPROTO_IPV6); ok && mtu != 0 && mtu < 1280 {
		return invalid("MTU %d is below IPv6's minimum of 1280", mtu)
	}
	return nil
}

// Describe names the prefixes asked for (Connect's cidr and
// Config.Prefix6), for errors.
func Describe(cidr, prefix6 netip.Prefix) string {
	switch {
	case prefix6 == (netip.Prefix{}) && cidr == (netip.Prefix{}):
		return "a prefix of the pool"
	case prefix6 == (netip.Prefix{}):
		return cidr.String()
	case cidr == (netip.Prefix{}):
		return prefix6.String()
	}
	return cidr.String() + ", " + prefix6.String()
}

func (ns Networks) Of(fam byte) (Network, bool) {
	for _, n := range ns {
		if n.Fam() == fam {
			return n, true
		}
	}
	return Network{}, false
}

// Addresses returns the host and namespace addresses for cidr: those
// given, or by default the first two host Addresses. An IPv4 network's
// first and last Addresses (network, broadcast) are no host Addresses,
// nor is an IPv6 network's first (the subnet-router anycast address).
func Addresses(cidr netip.Prefix, hostAddr, nsAddr netip.Addr) (netip.Addr, netip.Addr, error) {
	v4 := cidr.Addr().Is4()
	if cidr.Bits() == cidr.Addr().BitLen() {
		// Point-to-point: the namespace's address is the prefix, the host
		// end's its gateway, outside it (see Network.PointToPoint).
		switch {
		case !hostAddr.IsValid():
			return hostAddr, nsAddr, invalid("prefix %v is a single address: give the host end's address (the namespace's gateway) as HostAddr%s", cidr, map[bool]string{true: "", false: "6"}[v4])
		case hostAddr.Is4() != v4 || hostAddr.Zone() != "" || hostAddr == cidr.Addr() || hostAddr.IsUnspecified() ||
			hostAddr.IsLoopback() || hostAddr.IsMulticast() || hostAddr.IsLinkLocalUnicast():
			return hostAddr, nsAddr, invalid("host address %v cannot be the gateway of %v", hostAddr, cidr)
		case nsAddr.IsValid() && nsAddr != cidr.Addr():
			return hostAddr, nsAddr, invalid("namespace address %v is not %v", nsAddr, cidr.Addr())
		}
		return hostAddr, cidr.Addr(), nil
	}
	if !hostAddr.IsValid() {
		hostAddr = cidr.Addr().Next()
	}
	if !nsAddr.IsValid() {
		nsAddr = hostAddr.Next()
		if !cidr.Contains(nsAddr) || (v4 && nsAddr == lastAddr(cidr)) {
			nsAddr = cidr.Addr().Next()
		}
	}
	for _, a := range []netip.Addr{hostAddr, nsAddr} {
		if !cidr.Contains(a) || a == cidr.Addr() || (v4 && a == lastAddr(cidr)) {
			return hostAddr, nsAddr, invalid("address %v is not a host address of %v", a, cidr)
		}
	}
	if hostAddr == nsAddr {
		return hostAddr, nsAddr, invalid("host and namespace addresses are both %v", hostAddr)
	}
	return hostAddr, nsAddr, nil
}

// ValidPrefix checks that cidr can be a namespace's IPv4 network.
func ValidPrefix(cidr netip.Prefix) error {
	switch {
	case !cidr.IsValid() || !cidr.Addr().Is4() || cidr.Addr().Zone() != "":
		return invalid("prefix %v is not an IPv4 prefix", cidr)
	case cidr.Masked() != cidr:
		return invalid("prefix %v has host bits set (did you mean %v?)", cidr, cidr.Masked())
	case cidr.Bits() == 31:
		return invalid("prefix %v has no room for two hosts (at most /30, or /32 with HostAddr as its gateway)", cidr)
	case cidr.Bits() < nftset.MinBits4:
		return invalid("prefix %v is larger than /%d", cidr, nftset.MinBits4)
	case cidr.Addr().IsLoopback() || cidr.Addr().IsMulticast() || cidr.Addr().IsLinkLocalUnicast() ||
		cidr.Addr().IsUnspecified() || cidr.Overlaps(netip.MustParsePrefix("240.0.0.0/4")):
		return invalid("prefix %v is loopback, multicast, link-local or reserved", cidr)
	}
	return nil
}

// ValidPrefix6 checks that cidr can be a namespace's IPv6 network.
func ValidPrefix6(cidr netip.Prefix) error {
	a := cidr.Addr()
	switch {
	case !cidr.IsValid() || !a.Is6() || a.Is4In6() || a.Zone() != "":
		return invalid("prefix %v is not an IPv6 prefix", cidr)
	case cidr.Masked() != cidr:
		return invalid("prefix %v has host bits set (did you mean %v?)", cidr, cidr.Masked())
	case cidr.Bits() > 126 && cidr.Bits() < 128:
		return invalid("prefix %v has no room for two hosts (at most /126, or /128 with HostAddr6 as its gateway)", cidr)
	case cidr.Bits() < nftset.MinBits6:
		return invalid("prefix %v is larger than /%d", cidr, nftset.MinBits6)
	case a.IsMulticast() || a.IsLinkLocalUnicast() || cidr.Overlaps(netip.MustParsePrefix("::/8")) ||
		cidr.Overlaps(netip.MustParsePrefix("fec0::/10")):
		return invalid("prefix %v is loopback, multicast, link-local, IPv4-mapped or reserved", cidr)
	}
	return nil
}

// lastAddr is the last address of p (its broadcast address).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}

// AddrFlags are the flags of a link's new address: IPv6 addresses skip
// duplicate address detection (the pair is the link's own, and the
// address usable at once).
func AddrFlags(n Network) uint32 {
	if n.Fam() == unix.NFPROTO_IPV6 {
		return unix.IFA_F_NODAD
	}
	return 0
}

// CheckPool checks that pool can be cut into prefixes of bits for links.
func CheckPool(pool netip.Prefix, bits int) error {
	switch {
	case !pool.IsValid() || !pool.Addr().Is4() || pool.Masked() != pool:
		return invalid("pool %v is not an IPv4 prefix without host bits", pool)
	case bits < pool.Bits() || bits > 30:
		return invalid("pool %v cannot be cut into /%d prefixes (between /%d and /30)", pool, bits, pool.Bits())
	case bits-pool.Bits() > 24:
		return invalid("pool %v holds too many /%d prefixes to search (at most 2^24)", pool, bits)
	}
	return ValidPrefix(netip.PrefixFrom(pool.Addr(), bits))
}

// Candidates is the number of prefixes of bits in pool.
func Candidates(pool netip.Prefix, bits int) int { return 1 << (bits - pool.Bits()) }

// Candidate is the i-th prefix of bits in pool (0 <= i < Candidates).
func Candidate(pool netip.Prefix, bits, i int) netip.Prefix {
	b := pool.Addr().As4()
	binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])+uint32(i)<<(32-bits))
	return netip.PrefixFrom(netip.AddrFrom4(b), bits)
}

// Pool hands out the prefixes of one size in a pool in turn, from a
// random place on (each process starts elsewhere, so processes rarely try
// the same one), each call the next (concurrent callers get different
// ones). Which are free is for the caller to find out.
type Pool struct {
	prefix netip.Prefix
	bits   int
	next   atomic.Uint64
}

var pools sync.Map // poolKey → *Pool

type poolKey struct {
	prefix netip.Prefix
	bits   int
}

// PoolOf returns this process's Pool of the prefixes of bits in pool.
func PoolOf(pool netip.Prefix, bits int) (*Pool, error) {
	if err := CheckPool(pool, bits); err != nil {
		return nil, err
	}
	p := &Pool{prefix: pool, bits: bits}
	p.next.Store(rand.Uint64N(uint64(p.Size())))
	v, _ := pools.LoadOrStore(poolKey{pool, bits}, p)
	return v.(*Pool), nil
}

// Size is the number of prefixes in the pool.
func (p *Pool) Size() int { return Candidates(p.prefix, p.bits) }

// Next is the next prefix to try.
func (p *Pool) Next() netip.Prefix {
	return Candidate(p.prefix, p.bits, int((p.next.Add(1)-1)%uint64(p.Size())))
}

// ULA48 is the unique local /48 (RFC 4193: fd00::/8 and a 40-bit global
// ID) of the host namespace with identity nsID: the ID is hashed from the
// machine's id (/etc/machine-id, else the boot's) and nsID, so every
// process in that namespace finds the same /48 with nothing recorded, and
// two hosts or namespaces almost never share one.
func ULA48(nsID uint64) netip.Prefix {
	machine, err := os.ReadFile("/etc/machine-id")
	if err != nil {
		machine, _ = os.ReadFile("/proc/sys/kernel/random/boot_id")
	}
	h := sha256.Sum256(fmt.Appendf(nil, "nsnet ula %s %d", bytes.TrimSpace(machine), nsID))
	var a [16]byte
	a[0] = 0xfd
	copy(a[1:6], h[:5])
	return netip.PrefixFrom(netip.AddrFrom16(a), 48)
}

// Pool6 hands out the /64s of a /48 in turn, as Pool does.
type Pool6 struct {
	prefix netip.Prefix
	next   atomic.Uint64
}

// Pool6Of returns this process's Pool6 of the /64s of p48.
func Pool6Of(p48 netip.Prefix) *Pool6 {
	p := &Pool6{prefix: p48}
	p.next.Store(rand.Uint64N(1 << 16))
	v, _ := pools.LoadOrStore(poolKey{p48, 64}, p)
	return v.(*Pool6)
}

// Next is the next /64 to try.
func (p *Pool6) Next() netip.Prefix {
	a := p.prefix.Addr().As16()
	binary.BigEndian.PutUint16(a[6:8], uint16(p.next.Add(1)-1))
	return netip.PrefixFrom(netip.AddrFrom16(a), 64)
}

// reservations are this process's prefixes per host namespace and the
// namespaces it connected (see Reserve), under their own lock.
var reservations = struct {
	sync.Mutex
	prefixes map[uint64][]netip.Prefix // host ns → this process's live prefixes
	nss      map[uint64]bool           // connected namespaces
}{prefixes: map[uint64][]netip.Prefix{}, nss: map[uint64]bool{}}

// Reserve records the prefixes and namespace of a Link about to be made
// in this process, so that its own concurrent Connects fail early and
// clearly (other processes are kept out by the claims maps). Rules have no
// namespace: nsKey 0 reserves the prefixes alone. nsName names the
// namespace in the error.
func Reserve(hostKey, nsKey uint64, nsName string, prefixes []netip.Prefix) error {
	reservations.Lock()
	defer reservations.Unlock()
	if nsKey != 0 && reservations.nss[nsKey] {
		return fmt.Errorf("namespace %s is already connected (by this process): %w", nsName, os.ErrExist)
	}
	for _, q := range reservations.prefixes[hostKey] {
		for _, p := range prefixes {
			if q.Overlaps(p) {
				return fmt.Errorf("%w: %v is used by another link of this process", naterr.ErrOverlap, q)
			}
		}
	}
	if nsKey != 0 {
		reservations.nss[nsKey] = true
	}
	reservations.prefixes[hostKey] = append(reservations.prefixes[hostKey], prefixes...)
	return nil
}

// Release undoes Reserve.
func Release(hostKey, nsKey uint64, prefixes []netip.Prefix) {
	reservations.Lock()
	defer reservations.Unlock()
	if nsKey != 0 {
		delete(reservations.nss, nsKey)
	}
	reservations.prefixes[hostKey] = slices.DeleteFunc(reservations.prefixes[hostKey], func(q netip.Prefix) bool {
		return slices.Contains(prefixes, q)
	})
}

// OnePerFamily checks nat.AddRules' prefixes (one or two, of different
// families) and returns them IPv4 first.
func OnePerFamily(cidrs []netip.Prefix) ([]netip.Prefix, error) {
	cidrs = slices.Clone(cidrs)
	slices.SortStableFunc(cidrs, func(a, b netip.Prefix) int { return cmp.Compare(a.Addr().BitLen(), b.Addr().BitLen()) })
	if len(cidrs) == 0 || len(cidrs) > 2 || len(cidrs) == 2 && cidrs[0].Addr().BitLen() == cidrs[1].Addr().BitLen() {
		return nil, invalid("prefixes %v: give one, or one of each family", cidrs)
	}
	for _, cidr := range cidrs {
		valid := ValidPrefix
		if cidr.IsValid() && cidr.Addr().Is6() && !cidr.Addr().Is4In6() {
			valid = ValidPrefix6
		}
		if err := valid(cidr); err != nil {
			return nil, err
		}
	}
	return cidrs, nil
}

// Ask is what a link asks for (nat.Config's fields, and Connect's cidr
// as V4, which may be IPv6 for an IPv6-only link): prefixes, addresses
// (zero: the first two host addresses) and which families are routed.
type Ask struct {
	V4, V6               netip.Prefix
	Host, NS, Host6, NS6 netip.Addr
	Routed, Routed6      bool
}

// Networks checks the asked prefixes and addresses and returns the
// link's networks, IPv4 first.
func (a Ask) Networks() (Networks, error) {
	v4, v6 := a.V4, a.V6
	if v4.IsValid() && v4.Addr().Is6() && !v4.Addr().Is4In6() {
		if v6 != (netip.Prefix{}) {
			return nil, invalid("prefix %v is IPv6 and Prefix6 is %v: give the IPv4 prefix to Connect and the IPv6 one as Prefix6", v4, v6)
		}
		v4, v6 = netip.Prefix{}, v4
	}
	var nets Networks
	switch {
	case v4 == (netip.Prefix{}) && v6 == (netip.Prefix{}):
		return nil, invalid("no prefix: give an IPv4 or IPv6 prefix")
	case v4 != (netip.Prefix{}):
		if err := ValidPrefix(v4); err != nil {
			return nil, err
		}
		host, ns, err := Addresses(v4, a.Host, a.NS)
		if err != nil {
			return nil, err
		}
		nets = append(nets, Network{Prefix: v4, Host: host, NS: ns, Routed: a.Routed})
	case a.Host.IsValid() || a.NS.IsValid():
		return nil, invalid("HostAddr and NSAddr are IPv4 addresses, and the link has no IPv4 prefix (HostAddr6 and NSAddr6 are IPv6's)")
	}
	if v6 != (netip.Prefix{}) {
		if err := ValidPrefix6(v6); err != nil {
			return nil, err
		}
		host, ns, err := Addresses(v6, a.Host6, a.NS6)
		if err != nil {
			return nil, err
		}
		nets = append(nets, Network{Prefix: v6, Host: host, NS: ns, Routed: a.Routed6})
	} else if a.Host6.IsValid() || a.NS6.IsValid() {
		return nil, invalid("HostAddr6 and NSAddr6 are given, and the link has no IPv6 prefix (set Prefix6)")
	}
	return nets, nil
}
