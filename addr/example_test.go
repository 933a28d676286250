package addr_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"time"

	"github.com/nsnet/nsnet/addr"
)

// Add an IPv4 and an IPv6 address to a link and wait until the IPv6 one
// has passed duplicate address detection. Needs root.
func ExampleAdd() {
	if err := addr.Add(nil, "veth-a", netip.MustParsePrefix("10.0.0.1/24")); err != nil {
		log.Fatal(err)
	}
	v6 := netip.MustParsePrefix("fd00::1/64")
	if err := addr.Add(nil, "veth-a", v6); err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := addr.WaitReady(ctx, nil, "veth-a", v6); err != nil {
		log.Fatal(err)
	}
	addrs, err := addr.List(nil, "veth-a")
	if err != nil {
		log.Fatal(err)
	}
	for _, a := range addrs {
		fmt.Println(a.Prefix, a.Broadcast)
	}
}
