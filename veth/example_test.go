package veth_test

import (
	"fmt"
	"log"

	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/veth"
)

// Create a veth pair whose peer is made directly inside a namespace, both
// ends up, and print the namespace's links as "ip link show" would.
// Needs root.
func ExampleCreate() {
	ns, err := netns.New("example-ns1")
	if err != nil {
		log.Fatal(err)
	}
	defer netns.Delete("example-ns1")
	defer ns.Close()

	err = veth.Create(nil, veth.Config{Name: "veth-a", PeerName: "eth0", PeerNS: ns, Up: true})
	if err != nil {
		log.Fatal(err)
	}
	defer veth.Delete(nil, "veth-a") // the peer goes with it

	links, err := veth.List(ns)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(veth.Format(links))
}
