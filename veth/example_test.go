package veth_test

import (
	"fmt"
	"log"
	"net"

	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/veth"
)

// Create a veth pair between two namespaces, its peer made directly inside
// the second one, both ends up, and list the second namespace's links
// ("ip link show"; Format prints them as ip does).
func ExampleCreate() {
	host, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer host.Close()
	ns, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()

	mac, _ := net.ParseMAC("02:00:00:00:00:02")
	err = veth.Create(host, veth.Config{Name: "veth-a", PeerName: "eth0", PeerNS: ns, PeerHardwareAddr: mac, Up: true})
	if err != nil {
		log.Fatal(err)
	}
	defer veth.Delete(host, "veth-a") // the peer goes with it

	links, err := veth.List(ns)
	if err != nil {
		log.Fatal(err)
	}
	for _, l := range links {
		fmt.Println(l.Index, l.Name, l.Kind, l.Flags, l.HardwareAddr)
	}
	// Output:
	// 1 lo  LOOPBACK 00:00:00:00:00:00
	// 2 eth0 veth BROADCAST,MULTICAST,UP,LOWER_UP 02:00:00:00:00:02
}

// Look a link up by name, bring it down, and move it to another namespace.
func ExampleMove() {
	a, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	b, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	if err := veth.Create(a, veth.Config{Name: "left", PeerName: "right"}); err != nil {
		log.Fatal(err)
	}
	if err := veth.Move(a, "right", b); err != nil {
		log.Fatal(err)
	}
	l, err := veth.Lookup(b, "right")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(l.Name, l.Kind, l.Flags)
	// Output: right veth BROADCAST,MULTICAST
}

// A bridge with a veth pair's end as its port: "ip link add br0 type
// bridge", "ip link set port0 master br0".
func ExampleCreateBridge() {
	ns, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	if err := veth.CreateBridge(ns, "br0"); err != nil {
		log.Fatal(err)
	}
	if err := veth.Create(ns, veth.Config{Name: "port0", PeerName: "port1"}); err != nil {
		log.Fatal(err)
	}
	if err := veth.SetMaster(ns, "port0", "br0"); err != nil {
		log.Fatal(err)
	}
	br, _ := veth.Lookup(ns, "br0")
	port, _ := veth.Lookup(ns, "port0")
	fmt.Println(br.Kind, port.MasterName)
	// Output:
	// bridge br0
}
