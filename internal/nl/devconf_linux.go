package nl

import (
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// IFLA_INET_CONF holds the IPv4 devconf of a link (IPV4_DEVCONF_*), one u32
// per entry, entry i at index i-1.
const (
	iflaInetConf             = 1
	ipv4DevconfForwarding    = 1
	ipv4DevconfRouteLocalnet = 26 // IPV4_DEVCONF_ROUTE_LOCALNET (linux/ip.h), not in x/sys
)

// SetForwarding sets IPv4 forwarding of one link (net.ipv4.conf.LINK.forwarding)
// with RTM_SETLINK: IFLA_AF_SPEC → AF_INET → IFLA_INET_CONF →
// IPV4_DEVCONF_FORWARDING. rtnetlink/v2 cannot send this nest, so it is
// built here. Per-link forwarding on the ingress and egress links is all
// IPv4 forwarding needs; the global ip_forward switch stays as it is.
func SetForwarding(index int, on bool) Request { return setDevconf(index, ipv4DevconfForwarding, on) }

// SetRouteLocalnet sets net.ipv4.conf.LINK.route_localnet, which lets
// packets with loopback addresses be routed to and from the link.
func SetRouteLocalnet(index int, on bool) Request {
	return setDevconf(index, ipv4DevconfRouteLocalnet, on)
}

func setDevconf(index int, entry uint16, on bool) Request {
	v := uint32(0)
	if on {
		v = 1
	}
	return setLinkAF(index, unix.AF_INET, func(ae *netlink.AttributeEncoder) {
		ae.Nested(iflaInetConf, func(ae *netlink.AttributeEncoder) error {
			ae.Uint32(entry, v)
			return nil
		})
	})
}

// setLinkAF is RTM_SETLINK for link index carrying IFLA_AF_SPEC →
// family → the attributes fill writes: the nest inet_set_link_af and
// inet6_set_link_af read. rtnetlink/v2 cannot send it, so it is built here.
func setLinkAF(index int, family uint16, fill func(*netlink.AttributeEncoder)) Request {
	return rawLinkRequest(unix.RTM_SETLINK, index, func(ae *netlink.AttributeEncoder) {
		ae.Nested(unix.IFLA_AF_SPEC, func(ae *netlink.AttributeEncoder) error {
			ae.Nested(family, func(ae *netlink.AttributeEncoder) error {
				fill(ae)
				return nil
			})
			return nil
		})
	})
}

// Forwarding reads IPV4_DEVCONF_FORWARDING from an RTM_NEWLINK body; ok is
// false if the message has no IPv4 devconf (IPv4 disabled on the link).
func Forwarding(linkMsg []byte) (on, ok bool) {
	if len(linkMsg) < unix.SizeofIfInfomsg {
		return false, false
	}
	b := linkMsg[unix.SizeofIfInfomsg:]
	for _, typ := range []uint16{unix.IFLA_AF_SPEC, unix.AF_INET, iflaInetConf} {
		if b, ok = attribute(b, typ); !ok {
			return false, false
		}
	}
	if len(b) < 4*ipv4DevconfForwarding {
		return false, false
	}
	return NativeEndian.Uint32(b[4*(ipv4DevconfForwarding-1):]) != 0, true
}

// attribute returns the payload of the first attribute of type typ in b,
// the walk down one level of the nest setLinkAF builds.
func attribute(b []byte, typ uint16) ([]byte, bool) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, false
	}
	for ad.Next() {
		if ad.Type() == typ {
			return ad.Bytes(), true
		}
	}
	return nil, false
}

// IFLA_AF_SPEC → AF_INET6 attribute and value that turn IPv6 address
// generation off on a link (net.ipv6.conf.LINK.addr_gen_mode = 1).
const (
	iflaInet6AddrGenMode = unix.IFLA_INET6_ADDR_GEN_MODE
	in6AddrGenModeNone   = 1 // IN6_ADDR_GEN_MODE_NONE (linux/if_link.h), not in x/sys
)

// NoLinkLocal turns IPv6 address generation off on a link that is still
// down, so that it comes up with no link-local address, no fe80::/64 route
// and no duplicate address detection. The kernel keeps the routes of
// every such link in one list per prefix, which makes each new link's
// set-up cost grow with the number of links. The kernel ignores this nest
// when a link is created, so it is a request of its own. A link without
// IPv6 (IPv6 disabled, MTU below 1280) refuses it with EAFNOSUPPORT, which
// callers can ignore: there is nothing to turn off.
func NoLinkLocal(index int) Request {
	return setLinkAF(index, unix.AF_INET6, func(ae *netlink.AttributeEncoder) {
		ae.Uint8(iflaInet6AddrGenMode, in6AddrGenModeNone)
	})
}

// LinkConf is several settings of one link that PrepareLink sends in a
// single RTM_SETLINK.
type LinkConf struct {
	NoLinkLocal   bool   // as NoLinkLocal
	Forwarding    bool   // IPv4 forwarding on, as SetForwarding
	RouteLocalnet bool   // as SetRouteLocalnet
	Alias         string // ifalias, if not ""
}

// PrepareLink applies c to a link that is still down, in one request. On
// a link with IPv6 every RTM_SETLINK makes the kernel announce a state
// change, on which IPv6 walks every route of the namespace
// (rt6_sync_down_dev / rt6_sync_up, through fib6_clean_all): with many
// IPv6 links, each request costs more the more routes there are, so
// settings are sent together rather than one request each.
func PrepareLink(index int, c LinkConf) Request { return prepareLink(index, "", c) }

// PrepareLinkByName is PrepareLink for the link called name: only for a
// name that cannot belong to anyone else (see SetAliasByName), so that it
// can go in the batch that creates the link.
func PrepareLinkByName(name string, c LinkConf) Request { return prepareLink(0, name, c) }

func prepareLink(index int, name string, c LinkConf) Request {
	return rawLinkRequest(unix.RTM_SETLINK, index, func(ae *netlink.AttributeEncoder) {
		if name != "" {
			ae.String(unix.IFLA_IFNAME, name)
		}
		if c.Alias != "" {
			ae.String(unix.IFLA_IFALIAS, c.Alias)
		}
		ae.Nested(unix.IFLA_AF_SPEC, func(ae *netlink.AttributeEncoder) error {
			if c.Forwarding || c.RouteLocalnet {
				ae.Nested(unix.AF_INET, func(ae *netlink.AttributeEncoder) error {
					ae.Nested(iflaInetConf, func(ae *netlink.AttributeEncoder) error {
						if c.Forwarding {
							ae.Uint32(ipv4DevconfForwarding, 1)
						}
						if c.RouteLocalnet {
							ae.Uint32(ipv4DevconfRouteLocalnet, 1)
						}
						return nil
					})
					return nil
				})
			}
			if c.NoLinkLocal {
				ae.Nested(unix.AF_INET6, func(ae *netlink.AttributeEncoder) error {
					ae.Uint8(iflaInet6AddrGenMode, in6AddrGenModeNone)
					return nil
				})
			}
			return nil
		})
	})
}
