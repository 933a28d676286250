package route_test

import (
	"fmt"
	"log"
	"net/netip"

	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/route"
)

// Give a namespace its default route, then ask which way a packet to an
// outside address would take ("ip route get"). Needs root.
func ExampleAddDefault() {
	ns, err := netns.Open("example-ns1")
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	if err := route.AddDefault(ns, netip.MustParseAddr("10.0.0.1")); err != nil {
		log.Fatal(err)
	}
	r, err := route.Get(ns, netip.MustParseAddr("203.0.113.1"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Gateway, r.Src)
}

// A route to a network through a gateway, in another table, with a metric.
func ExampleAdd() {
	err := route.Add(nil, route.Route{
		Dst:     netip.MustParsePrefix("198.51.100.0/24"),
		Gateway: netip.MustParseAddr("10.0.0.2"),
		Metric:  100,
		Table:   100,
	})
	if err != nil {
		log.Fatal(err)
	}
}
