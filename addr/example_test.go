package addr_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"time"

	"github.com/nsnet/nsnet/addr"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/veth"
)

// Add an IPv4 and an IPv6 address to a link ("ip address add"), wait until
// the IPv6 one has passed duplicate address detection, and list them
// ("ip address show").
func ExampleAdd() {
	ns, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	if err := veth.Create(ns, veth.Config{Name: "veth-a", PeerName: "veth-b", Up: true}); err != nil {
		log.Fatal(err)
	}

	if err := addr.Add(ns, "veth-a", netip.MustParsePrefix("10.0.0.1/24")); err != nil {
		log.Fatal(err)
	}
	v6 := netip.MustParsePrefix("fd00::1/64")
	if err := addr.Add(ns, "veth-a", v6); err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := addr.WaitReady(ctx, ns, "veth-a", v6); err != nil {
		log.Fatal(err)
	}

	addrs, err := addr.List(ns, "veth-a")
	if err != nil {
		log.Fatal(err)
	}
	for _, a := range addrs {
		if a.Prefix.Addr().IsLinkLocalUnicast() {
			continue // the kernel's own fe80:: address, from the MAC
		}
		fmt.Println(a.Prefix, a.Broadcast, a.Tentative())
	}
	// Output:
	// 10.0.0.1/24 10.0.0.255 false
	// fd00::1/64 invalid IP false
}

// An IPv6 address usable at once, without duplicate address detection
// ("ip address add ... nodad"), then removed ("ip address del").
func ExampleConfig_Add() {
	ns, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	if err := veth.Create(ns, veth.Config{Name: "veth-a", PeerName: "veth-b", Up: true}); err != nil {
		log.Fatal(err)
	}
	p := netip.MustParsePrefix("fd00::2/64")
	if err := (addr.Config{NoDAD: true}).Add(ns, "veth-a", p); err != nil {
		log.Fatal(err)
	}
	addrs, err := addr.List(ns, "veth-a")
	if err != nil {
		log.Fatal(err)
	}
	for _, a := range addrs {
		if a.Prefix == p {
			fmt.Println(a.Prefix, "usable:", !a.Tentative())
		}
	}
	if err := addr.Delete(ns, "veth-a", p); err != nil {
		log.Fatal(err)
	}
	// Output: fd00::2/64 usable: true
}
