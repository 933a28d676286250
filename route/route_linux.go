package route

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// ErrInvalidRoute is matched by the error for a route that cannot be sent
// to the kernel as given.
var ErrInvalidRoute = errors.New("invalid route")

// ErrInvalidName is matched by the error for a malformed link name.
var ErrInvalidName = nl.ErrInvalidName

// Scopes, as in "ip route ... scope SCOPE".
const (
	ScopeUniverse uint8 = unix.RT_SCOPE_UNIVERSE
	ScopeLink     uint8 = unix.RT_SCOPE_LINK
	ScopeHost     uint8 = unix.RT_SCOPE_HOST
)

// Tables, as in "ip route ... table TABLE".
const (
	TableMain  = unix.RT_TABLE_MAIN
	TableLocal = unix.RT_TABLE_LOCAL
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
	// LinkIndex. When both are set, Link wins.
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
}

func (r Route) String() string {
	s := r.Dst.String()
	if r.Dst.Bits() == 0 {
		s = "default"
	}
	if r.Gateway.IsValid() {
		s += " via " + r.Gateway.String()
	}
	if r.Link != "" {
		s += " dev " + r.Link
	} else if r.LinkIndex != 0 {
		s += fmt.Sprintf(" dev if%d", r.LinkIndex)
	}
	if r.Src.IsValid() {
		s += " src " + r.Src.String()
	}
	if r.Metric != 0 {
		s += fmt.Sprintf(" metric %d", r.Metric)
	}
	if r.Table != 0 && r.Table != TableMain {
		s += fmt.Sprintf(" table %d", r.Table)
	}
	return s
}

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
	case r.Link != "":
		return nl.CheckIfName(r.Link)
	}
	return nil
}

func (r Route) spec(c *nl.Conn) (nl.RouteSpec, error) {
	s := nl.RouteSpec{
		Dst: r.Dst, Gateway: r.Gateway, LinkIndex: r.LinkIndex, Src: r.Src,
		Metric: r.Metric, Table: r.Table, Scope: r.Scope, Protocol: r.Protocol, Type: r.Type,
	}
	if r.Link != "" {
		index, err := c.LinkIndex(r.Link)
		if err != nil {
			return s, err
		}
		s.LinkIndex = index
	}
	if s.Protocol == 0 {
		s.Protocol = unix.RTPROT_BOOT
	}
	if s.Type == 0 {
		s.Type = unix.RTN_UNICAST
	}
	if s.Scope == 0 && !s.Gateway.IsValid() && s.LinkIndex != 0 {
		s.Scope = unix.RT_SCOPE_LINK
	}
	return s, nil
}

// Add adds r ("ip route add"). A route already there matches os.ErrExist.
func Add(ns *netns.Handle, r Route) error { return change(ns, "add", r, false) }

// Replace adds r or replaces the route with the same destination, table,
// metric and type ("ip route replace").
func Replace(ns *netns.Handle, r Route) error { return change(ns, "replace", r, true) }

// AddDefault adds the default route via gw ("ip route add default via GW").
func AddDefault(ns *netns.Handle, gw netip.Addr) error {
	dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if gw.Is6() {
		dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return Add(ns, Route{Dst: dst, Gateway: gw})
}

func change(ns *netns.Handle, op string, r Route, replace bool) error {
	return exec(ns, op, r, func(s nl.RouteSpec) nl.Request { return nl.NewRoute(s, replace) })
}

// Delete deletes r ("ip route del"). Fields left zero match any value, as
// with ip(8), except Dst. A missing route matches os.ErrNotExist.
func Delete(ns *netns.Handle, r Route) error {
	return exec(ns, "delete", r, func(s nl.RouteSpec) nl.Request {
		if r.Protocol == 0 {
			s.Protocol = 0
		}
		if r.Scope == 0 {
			s.Scope = unix.RT_SCOPE_NOWHERE // "any scope" for RTM_DELROUTE
		}
		return nl.DelRoute(s)
	})
}

func exec(ns *netns.Handle, op string, r Route, req func(nl.RouteSpec) nl.Request) error {
	if err := r.validate(); err != nil {
		return fmt.Errorf("route: %s: %w", op, err)
	}
	c, err := nl.Dial(ns)
	if err != nil {
		return fmt.Errorf("route: %s %v: %w", op, r, err)
	}
	defer c.Close()
	s, err := r.spec(c)
	if err == nil {
		err = c.Exec(req(s))
	}
	if err != nil {
		return fmt.Errorf("route: %s %v: %w", op, r, err)
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

// List returns the routes of ns that f selects (nil: both families, main
// table), as "ip route show" and "ip -6 route show" do. The kernel filters
// by table itself. Link names are not resolved: routes carry LinkIndex.
func List(ns *netns.Handle, f *Filter) ([]Route, error) {
	if f == nil {
		f = &Filter{}
	}
	var family uint8
	switch f.Family {
	case 0:
	case 4:
		family = unix.AF_INET
	case 6:
		family = unix.AF_INET6
	default:
		return nil, fmt.Errorf("route: list: %w: family %d is not 4, 6 or 0", ErrInvalidRoute, f.Family)
	}
	table := f.Table
	switch {
	case table == 0:
		table = TableMain
	case table == -1:
		table = 0
	case table < 0:
		return nil, fmt.Errorf("route: list: %w: table %d", ErrInvalidRoute, f.Table)
	}
	c, err := nl.Dial(ns)
	if err != nil {
		return nil, fmt.Errorf("route: list: %w", err)
	}
	defer c.Close()
	msgs, err := c.Query(nl.DumpRoutes(family, table))
	if err != nil {
		return nil, fmt.Errorf("route: list: %w", err)
	}
	var out []Route
	for _, m := range msgs {
		s, err := nl.DecodeRoute(m.Data)
		if err != nil {
			return nil, fmt.Errorf("route: list: %w", err)
		}
		if table != 0 && s.Table != table {
			continue
		}
		out = append(out, fromSpec(s))
	}
	return out, nil
}

func fromSpec(s nl.RouteSpec) Route {
	return Route{
		Dst: s.Dst, Gateway: s.Gateway, LinkIndex: s.LinkIndex, Src: s.Src, Metric: s.Metric,
		Table: s.Table, Scope: s.Scope, Protocol: s.Protocol, Type: s.Type,
	}
}

// Get returns the route the kernel would use to reach dst
// ("ip route get DST"): its output link, gateway and preferred source.
// Dst of the result is dst as a host prefix. No packet is sent.
func Get(ns *netns.Handle, dst netip.Addr) (Route, error) {
	if !dst.IsValid() || dst.Zone() != "" {
		return Route{}, fmt.Errorf("route: get: %w: %v", ErrInvalidRoute, dst)
	}
	dst = dst.Unmap()
	c, err := nl.Dial(ns)
	if err != nil {
		return Route{}, fmt.Errorf("route: get %v: %w", dst, err)
	}
	defer c.Close()
	msgs, err := c.Query(nl.GetRoute(dst))
	if err == nil && len(msgs) != 1 {
		err = fmt.Errorf("%d replies", len(msgs))
	}
	if err != nil {
		return Route{}, fmt.Errorf("route: get %v: %w", dst, err)
	}
	s, err := nl.DecodeRoute(msgs[0].Data)
	if err != nil {
		return Route{}, fmt.Errorf("route: get %v: %w", dst, err)
	}
	return fromSpec(s), nil
}
