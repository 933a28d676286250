package route

import (
	"errors"
	"fmt"
	"math"
	"net/netip"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
)

// ErrInvalidRoute is matched by the error for a route that cannot be sent
// to the kernel as given.
var ErrInvalidRoute = errors.New("invalid route")

// ErrInvalidName is matched by the error for a malformed link name; it is
// netns.ErrInvalidName (one value across nsnet).
var ErrInvalidName = nl.ErrInvalidName

// Scopes, as in "ip route ... scope SCOPE".
const (
	ScopeUniverse uint8 = 0
	ScopeLink     uint8 = 253
	ScopeHost     uint8 = 254
)

// ErrInterrupted is matched by List's error when the routes kept changing
// while they were read, through every read for two seconds (List reads
// again after growing pauses; a change during a read makes the read
// incomplete). It is one value in every package that returns it.
var ErrInterrupted = nl.ErrInterrupted

// Tables, as in "ip route ... table TABLE".
const (
	TableMain  = 254
	TableLocal = 255
)

// Route is one route. The zero value of every field but Dst means what
// ip(8) does when the option is left out.
type Route struct {
	// Dst is the destination; 0.0.0.0/0 or ::/0 for the default route.
	Dst netip.Prefix
	// Gateway is the next hop ("via"); invalid for a directly connected
	// destination. Same family as Dst.
	Gateway netip.Addr
	// Link is the output link by name ("dev"); "" for none, or use
	// LinkIndex. When both are set, LinkIndex wins: List and Get set
	// both, the name as it was then, and a route they returned keeps
	// meaning its link if that is renamed.
	Link      string
	LinkIndex int
	// Src is the preferred source address ("src"); invalid for none.
	Src netip.Addr
	// Metric is the route's priority ("metric"); lower wins.
	Metric int
	// Table is the routing table; 0 is the main table (254).
	Table int
	// Scope is the route's scope; 0 is universe, except that a route with
	// a link and no gateway gets link scope, as ip(8) gives it.
	Scope uint8
	// Protocol is who installed it; 0 means "boot", ip's default.
	Protocol uint8
	// Type is the route type; 0 means unicast.
	Type uint8
	// NextHops are the next hops of a multipath route ("nexthop via GW dev
	// LINK weight W ..."), which then has no Gateway or Link of its own.
	NextHops []NextHop
}

// NextHop is one next hop of a multipath route.
type NextHop struct {
	Gateway   netip.Addr // "via"; invalid for none
	Link      string     // "dev" by name, or use LinkIndex; LinkIndex wins (see Route.Link)
	LinkIndex int
	Weight    int // 1..256; 0 means 1
}

// String describes the route in "ip route" style, e.g.
// "default via 10.0.0.1 dev eth0", "192.0.2.0/24 dev eth0" or
// "blackhole 198.51.100.0/24".
func (r Route) String() string {
	s := r.Dst.String()
	if r.Dst.Bits() == 0 {
		s = "default"
	}
	if t, ok := typeNames[r.Type]; ok {
		s = t + " " + s
	}
	s += viaDev(r.Gateway, r.Link, r.LinkIndex)
	if r.Src.IsValid() {
		s += " src " + r.Src.String()
	}
	if r.Metric != 0 {
		s += fmt.Sprintf(" metric %d", r.Metric)
	}
	if r.Table != 0 && r.Table != TableMain {
		s += fmt.Sprintf(" table %d", r.Table)
	}
	for _, h := range r.NextHops {
		s += " nexthop" + viaDev(h.Gateway, h.Link, h.LinkIndex) + fmt.Sprintf(" weight %d", max(h.Weight, 1))
	}
	return s
}

// viaDev is " via GW dev LINK", each part only if set (a link by index
// as "ifN").
func viaDev(gw netip.Addr, link string, index int) string {
	var s string
	if gw.IsValid() {
		s += " via " + gw.String()
	}
	if link != "" {
		s += " dev " + link
	} else if index != 0 {
		s += fmt.Sprintf(" dev if%d", index)
	}
	return s
}

// typeNames are the route types ip(8) prints before the destination
// (unicast, the default, is not printed).
var typeNames = map[uint8]string{2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
	6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}

func (r Route) validate() error {
	bad := func(why string) error { return fmt.Errorf("%w %v: %s", ErrInvalidRoute, r, why) }
	switch {
	case !r.Dst.IsValid():
		return bad("destination is not a valid prefix")
	case r.Dst.Addr().Is4In6() || r.Dst.Addr().Zone() != "":
		return bad("destination is IPv4-mapped or has a zone")
	case r.Dst.Masked() != r.Dst:
		return bad(fmt.Sprintf("destination has host bits set (did you mean %v?)", r.Dst.Masked()))
	case r.Gateway.IsValid() && r.Gateway.Is4() != r.Dst.Addr().Is4():
		return bad("gateway and destination are of different families")
	case r.Gateway.IsValid() && (r.Gateway.IsUnspecified() || r.Gateway.IsMulticast()):
		return bad("gateway is unspecified or multicast")
	case r.Src.IsValid() && r.Src.Is4() != r.Dst.Addr().Is4():
		return bad("source and destination are of different families")
	case r.Metric < 0 || r.Table < 0 || r.LinkIndex < 0:
		return bad("negative metric, table or link index")
	case uint64(r.Metric) > math.MaxUint32 || uint64(r.Table) > math.MaxUint32 || uint64(r.LinkIndex) > math.MaxInt32:
		// The kernel's fields are 32 bits: a larger value would be cut to
		// another metric, table or link (1<<32+1 is lo), not refused.
		return bad("metric, table or link index out of range (32 bits)")
	case len(r.NextHops) > 0 && (r.Gateway.IsValid() || r.Link != "" || r.LinkIndex != 0):
		return bad("a multipath route has its gateways and links in NextHops only")
	case r.Link != "":
		return nl.CheckIfName(r.Link)
	}
	for _, h := range r.NextHops {
		switch {
		case h.Weight < 0 || h.Weight > 256:
			return bad(fmt.Sprintf("next hop weight %d outside 1..256", h.Weight))
		case h.LinkIndex < 0 || uint64(h.LinkIndex) > math.MaxInt32:
			return bad("next hop link index out of range")
		case h.Gateway.IsValid() && h.Gateway.Is4() != r.Dst.Addr().Is4():
			return bad("next hop gateway and destination are of different families")
		case !h.Gateway.IsValid() && h.Link == "" && h.LinkIndex == 0:
			return bad("next hop with neither gateway nor link")
		case h.Link != "":
			if err := nl.CheckIfName(h.Link); err != nil {
				return err
			}
		}
	}
	return nil
}

// Filter selects the routes List returns.
type Filter struct {
	// Family is 4, 6 or 0 for both.
	Family int
	// Table is the table to list; 0 is the main table, -1 every table.
	Table int
}

// Add adds r ("ip route add"). A route already there matches os.ErrExist.
func Add(ns *netns.Handle, r Route) error {
	return nl.NeedPriv(sysAdd(ns, r), "CAP_NET_ADMIN in the namespace")
}

// Replace adds r or replaces the route with the same destination, table,
// metric and type ("ip route replace").
func Replace(ns *netns.Handle, r Route) error {
	return nl.NeedPriv(sysReplace(ns, r), "CAP_NET_ADMIN in the namespace")
}

// AddDefault adds the default route via gw ("ip route add default via GW").
// It names no link: for a gateway that needs one (an IPv6 link-local
// address such as fe80::1), use Add with Route{Dst: ::/0, Gateway: gw,
// Link: LINK}.
func AddDefault(ns *netns.Handle, gw netip.Addr) error {
	return nl.NeedPriv(sysAddDefault(ns, gw), "CAP_NET_ADMIN in the namespace")
}

// Delete deletes r ("ip route del"). Fields left zero match any value, as
// with ip(8), except Dst. A missing route matches os.ErrNotExist.
func Delete(ns *netns.Handle, r Route) error {
	return nl.NeedPriv(sysDelete(ns, r), "CAP_NET_ADMIN in the namespace")
}

// List returns the routes of ns that f selects (nil: both families, main
// table), as "ip route show" and "ip -6 route show" do. The kernel filters
// by table itself. Link names are not resolved: routes carry LinkIndex.
func List(ns *netns.Handle, f *Filter) ([]Route, error) {
	v, err := sysList(ns, f)
	return v, nl.NeedPriv(err, "CAP_NET_ADMIN in the namespace")
}

// Get returns the route the kernel would use to reach dst
// ("ip route get DST"): its output link, gateway and preferred source.
// Dst of the result is dst as a host prefix. No packet is sent.
func Get(ns *netns.Handle, dst netip.Addr) (Route, error) {
	v, err := sysGet(ns, dst)
	return v, nl.NeedPriv(err, "CAP_NET_ADMIN in the namespace")
}
