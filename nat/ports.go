package nat

import (
	"fmt"
	"net/netip"
	"strings"
)

// Port publishes ports of a connected namespace, as "docker run -p" does:
// connections to HostAddr:HostPort (and the Count-1 ports after it) reach
// the namespace at NSPort (and after). They are reachable from the
// outside (the server sees the client's own address), from the host itself
// (to HostAddr; for 127.0.0.1, from the host only), from other connected
// namespaces and from the namespace itself, at HostAddr:HostPort.
type Port struct {
	Protocol string // "tcp" or "udp"
	// HostAddr is an address of the host, or 127.0.0.1 for the host
	// alone; the zero value means every address the uplink has when the
	// port is published, in the link's families (IPv4's, IPv6's global
	// ones), and 127.0.0.1 for the host's own connections (as docker run
	// -p). An IPv6 port goes to the namespace's IPv6 address.
	HostAddr netip.Addr
	HostPort uint16
	NSPort   uint16 // 0: HostPort
	Count    uint16 // ports in the range; 0 means 1
}

// String is the port as "tcp 203.0.113.2:8080->80" ("*:" for every
// uplink address; "+N" for a range of N).
func (p Port) String() string {
	host := "*"
	if p.HostAddr.IsValid() {
		host = p.HostAddr.String()
	}
	s := fmt.Sprintf("%s %s:%d->%d", strings.ToLower(p.Protocol), host, p.HostPort, p.nsPort())
	if p.Count > 1 {
		s += fmt.Sprintf("+%d", p.Count)
	}
	return s
}

func (p Port) nsPort() uint16 {
	if p.NSPort == 0 {
		return p.HostPort
	}
	return p.NSPort
}

// Validate checks p as Publish does, before anything is touched: an error
// matching ErrInvalidConfig for a port that cannot be published.
func (p Port) Validate() error {
	switch {
	case p.proto() != "tcp" && p.proto() != "udp":
		return invalid("port %v: protocol %q is not tcp or udp (in any case)", p, p.Protocol)
	case p.HostPort == 0:
		return invalid("port %v: host port 0", p)
	case p.HostAddr.IsValid() && (p.HostAddr.Is4In6() || p.HostAddr.Zone() != "" || p.HostAddr.IsUnspecified() || p.HostAddr.IsMulticast() ||
		p.HostAddr.IsLinkLocalUnicast()):
		return invalid("port %v: host address %v is not a unicast address", p, p.HostAddr)
	case p.HostAddr == netip.IPv6Loopback():
		return invalid("port %v: ::1 cannot be published (Linux does not translate IPv6 loopback to another link); use 127.0.0.1", p)
	case p.HostAddr.IsLoopback() && p.HostAddr != netip.AddrFrom4([4]byte{127, 0, 0, 1}):
		return invalid("port %v: of the loopback addresses only 127.0.0.1 is published", p)
	}
	n := max(int(p.Count), 1)
	if int(p.HostPort)+n-1 > 65535 || int(p.nsPort())+n-1 > 65535 {
		return invalid("port %v: the range goes past 65535", p)
	}
	return nil
}

// proto is the port's protocol in lower case: "TCP" and "tcp" are one, as
// Docker takes them.
func (p Port) proto() string { return strings.ToLower(p.Protocol) }
