package route_test

import (
	"fmt"
	"log"
	"net/netip"

	"github.com/nsnet/nsnet/addr"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/route"
	"github.com/nsnet/nsnet/veth"
)

// newLinked returns a namespace with a link veth-a up, 10.0.0.1/24 on it
// (its gateway would be 10.0.0.2).
func newLinked() *netns.Handle {
	ns, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	if err := veth.Create(ns, veth.Config{Name: "veth-a", PeerName: "veth-b", Up: true}); err != nil {
		log.Fatal(err)
	}
	if err := addr.Add(ns, "veth-a", netip.MustParsePrefix("10.0.0.1/24")); err != nil {
		log.Fatal(err)
	}
	return ns
}

// Give a namespace its default route ("ip route add default via GW"),
// then ask which way a packet to an outside address would take
// ("ip route get"): no packet is sent.
func ExampleAddDefault() {
	ns := newLinked()
	defer ns.Close()
	if err := route.AddDefault(ns, netip.MustParseAddr("10.0.0.2")); err != nil {
		log.Fatal(err)
	}
	r, err := route.Get(ns, netip.MustParseAddr("203.0.113.1"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Dst, "via", r.Gateway, "src", r.Src)
	// Output: 203.0.113.1/32 via 10.0.0.2 src 10.0.0.1
}

// A route to a network through a gateway, with a metric
// ("ip route add 198.51.100.0/24 via 10.0.0.2 metric 100"), listed and
// looked up.
func ExampleAdd() {
	ns := newLinked()
	defer ns.Close()
	err := route.Add(ns, route.Route{
		Dst:     netip.MustParsePrefix("198.51.100.0/24"),
		Gateway: netip.MustParseAddr("10.0.0.2"),
		Metric:  100,
	})
	if err != nil {
		log.Fatal(err)
	}
	routes, err := route.List(ns, &route.Filter{Family: 4})
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range routes {
		fmt.Println(r.Dst, r.Gateway, r.Metric)
	}
	r, err := route.Get(ns, netip.MustParseAddr("198.51.100.7"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("198.51.100.7 via", r.Gateway)
	// Output:
	// 10.0.0.0/24 invalid IP 0
	// 198.51.100.0/24 10.0.0.2 100
	// 198.51.100.7 via 10.0.0.2
}
