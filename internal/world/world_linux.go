// Package world builds a private stand-in for a host and the internet, for
// tests, examples and benchmarks: a namespace "inet" holding the outside
// host 203.0.113.1/24 (a documentation address) and an uplink up0 holding
// 203.0.113.2/24 in the host namespace, a veth pair between them. inet has
// no route back to any namespace's prefix, so only NAT makes replies come
// back. Nothing here is meant for a real host.
package world

import (
	"errors"
	"net/netip"

	"github.com/nsnet/nsnet/addr"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/veth"
)

// Addresses of the private world.
var (
	Outside    = netip.MustParseAddr("203.0.113.1")      // the outside host, in inet
	UplinkAddr = netip.MustParsePrefix("203.0.113.2/24") // up0, in the host
)

// Uplink is the host's uplink in the private world.
const Uplink = "up0"

// World is a built private world.
type World struct {
	Host     *netns.Handle // nil when the world's host is the current namespace
	Inet     *netns.Handle
	HostName string // "" when the host is the current namespace
	InetName string
}

// New builds a world. With a non-empty hostName the host is a new named
// namespace; with "" it is the current namespace (a process already inside
// private namespaces). The outside namespace is called inetName.
func New(hostName, inetName string) (w *World, err error) {
	w = &World{HostName: hostName, InetName: inetName}
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
	for _, step := range []func() error{
		func() error { return veth.SetUp(w.Inet, "lo") },
		func() error {
			return veth.Create(w.Host, veth.Config{Name: Uplink, PeerName: "inet0", PeerNS: w.Inet, Up: true})
		},
		func() error { return addr.Add(w.Host, Uplink, UplinkAddr) },
		func() error { return addr.Add(w.Inet, "inet0", netip.PrefixFrom(Outside, 24)) },
	} {
		if err = step(); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Close removes the world's namespaces (and with them its links).
func (w *World) Close() error {
	var errs []error
	if w.Host == nil {
		if err := veth.Delete(nil, Uplink); err != nil && w.Inet != nil {
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
