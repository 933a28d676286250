//go:build linux

package main

import (
	"net/netip"
	"time"

	"github.com/nsnet/nsnet/addr"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/route"
	"github.com/nsnet/nsnet/veth"
	"golang.org/x/sys/unix"
)

// steps are the times, in ms, of the tutorial's host-side commands for one
// namespace, each made as its own call (what `ip` asks of the kernel, one
// request each, without the process that `ip` is: starting `ip -n HOST`
// costs 15-20 ms here, which would hide the kernel's share); routes is the
// alternative to the address that an unnumbered host end would take (a
// local route for the gateway address and the prefix's route).
type steps struct{ create, up, address, routes float64 }

// commandProbe makes the host end of one more namespace in host the
// tutorial's way, one command at a time (ip link add, with the peer made
// in the namespace; ip link set up; ip address add) and then the
// unnumbered way's routes on the same link, times each, and removes it
// again. Next to Connect's figures at few and at many links, it shows
// what the kernel's own requests cost at each.
func commandProbe(host *netns.Handle, tag string) steps {
	ns, err := netns.New(tag + "-cmd-probe")
	check(err)
	defer func() { ns.Close(); check(netns.Delete(tag + "-cmd-probe")) }()
	var s steps
	timed := func(d *float64, f func() error) {
		t := time.Now()
		check(f())
		*d = ms(time.Since(t))
	}
	timed(&s.create, func() error {
		return veth.Create(host, veth.Config{Name: "cpA", PeerName: "cpB", PeerNS: ns})
	})
	defer func() { check(veth.Delete(host, "cpA")) }()
	timed(&s.up, func() error { return veth.SetUp(host, "cpA") })
	timed(&s.address, func() error { return addr.Add(host, "cpA", netip.MustParsePrefix("10.201.0.1/24")) })
	timed(&s.routes, func() error {
		gw := netip.MustParseAddr("10.202.0.1")
		if err := route.Add(host, route.Route{Dst: netip.PrefixFrom(gw, 32), Link: "cpA", Table: 255, Type: unix.RTN_LOCAL, Scope: unix.RT_SCOPE_HOST, Src: gw, Protocol: unix.RTPROT_KERNEL}); err != nil {
			return err
		}
		return route.Add(host, route.Route{Dst: netip.MustParsePrefix("10.202.0.0/24"), Link: "cpA", Src: gw, Protocol: unix.RTPROT_KERNEL})
	})
	return s
}
