package hostview

import (
	"fmt"
	"net/netip"
	"os"
	"slices"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/naterr"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// ProbePorts fails with os.ErrExist for a port a socket of the host
// already has (binding a socket to it is refused: EADDRINUSE), and with
// naterr.ErrInvalidConfig for an address that is not the host's.
func ProbePorts(host *netns.Handle, maps []nftset.PortMap) error {
	return nl.Do(host, func() error {
		for _, pm := range maps {
			typ := unix.SOCK_STREAM
			if pm.Proto == unix.IPPROTO_UDP {
				typ = unix.SOCK_DGRAM
			}
			family := unix.AF_INET6
			var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: pm.Addr.As16(), Port: int(pm.Port)}
			if pm.Addr.Is4() {
				family, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: pm.Addr.As4(), Port: int(pm.Port)}
			}
			fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			err = unix.Bind(fd, sa)
			unix.Close(fd)
			switch {
			case err == unix.EADDRINUSE:
				return fmt.Errorf("%v: a socket of the host uses it: %w", pm, os.ErrExist)
			case err == unix.EADDRNOTAVAIL:
				return fmt.Errorf("%w: %v: %v is not an address of the host", naterr.ErrInvalidConfig, pm, pm.Addr)
			case err != nil && err != unix.EACCES:
				return fmt.Errorf("%v: %w", pm, err)
			}
		}
		return nil
	})
}

// Addrs lists the addresses of the link with the index in the
// families fams: IPv4's, and IPv6's global ones.
func Addrs(hc *nl.Conn, index int, fams []byte) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, fam := range fams {
		af := unix.AF_INET
		if fam == unix.NFPROTO_IPV6 {
			af = unix.AF_INET6
		}
		msgs, err := hc.Dump(nl.DumpAddrs(uint8(af), index))
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			var am rtnetlink.AddressMessage
			if err := am.UnmarshalBinary(m.Data); err != nil {
				return nil, err
			}
			if int(am.Index) != index || am.Attributes == nil {
				continue
			}
			ip := am.Attributes.Local
			if ip == nil {
				ip = am.Attributes.Address
			}
			a := nl.IPToAddr(ip)
			if (a.Is4() && af == unix.AF_INET) || (a.Is6() && af == unix.AF_INET6 && !a.IsLinkLocalUnicast() && !a.IsLoopback()) {
				out = append(out, a)
			}
		}
	}
	return out, nil
}

// PortRequest is a published port as asked for: Addr (invalid for every
// address of the uplink), the protocol number, the first host port and
// namespace port, how many, and its name for errors.
type PortRequest struct {
	Addr                netip.Addr
	Proto               uint8
	Port, NSPort, Count uint16
	Name                string
}

// ExpandPorts resolves reqs into mappings for a link of the families fams
// (for one without an address: every address of the uplink of those
// families, IPv4's and IPv6's global ones, and 127.0.0.1 for the host's
// own connections, as docker run -p gives; each port of a range), refusing
// one twice or one in have (os.ErrExist), and with probe, probes the
// host's sockets (see ProbePorts).
func ExpandPorts(host *netns.Handle, hc *nl.Conn, uplink int, fams []byte, have []nftset.PortMap, reqs []PortRequest, probe bool) ([]nftset.PortMap, error) {
	var uplinkAddrs []netip.Addr
	var maps []nftset.PortMap
	same := func(x, y nftset.PortMap) bool { return x.Addr == y.Addr && x.Proto == y.Proto && x.Port == y.Port }
	for _, r := range reqs {
		addrs := []netip.Addr{r.Addr}
		if !r.Addr.IsValid() {
			if uplinkAddrs == nil {
				var err error
				if uplinkAddrs, err = Addrs(hc, uplink, fams); err != nil {
					return nil, fmt.Errorf("uplink addresses: %w", err)
				}
				if len(uplinkAddrs) == 0 {
					return nil, fmt.Errorf("%w: the uplink has no address to publish %s on", naterr.ErrInvalidConfig, r.Name)
				}
				if slices.Contains(fams, unix.NFPROTO_IPV4) {
					// (Not ::1: Linux translates no IPv6 loopback
					// destination to another link.)
					uplinkAddrs = append(uplinkAddrs, netip.AddrFrom4([4]byte{127, 0, 0, 1}))
				}
			}
			addrs = uplinkAddrs
		} else if fam := nftset.FamilyOf(r.Addr); !slices.Contains(fams, fam) {
			return nil, fmt.Errorf("%w: port %s: the link has no %s network", naterr.ErrInvalidConfig, r.Name, nftset.FamilyName(fam))
		}
		for _, a := range addrs {
			for i := range r.Count {
				pm := nftset.PortMap{Addr: a, Proto: r.Proto, Port: r.Port + i, NSPort: r.NSPort + i}
				if slices.ContainsFunc(maps, func(x nftset.PortMap) bool { return same(x, pm) }) ||
					slices.ContainsFunc(have, func(x nftset.PortMap) bool { return same(x, pm) }) {
					return nil, fmt.Errorf("%v: published already: %w", pm, os.ErrExist)
				}
				maps = append(maps, pm)
			}
		}
	}
	if !probe {
		return maps, nil
	}
	return maps, ProbePorts(host, maps)
}
