package nat_test

import (
	"fmt"
	"log"
	"net/netip"
	"os/exec"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
)

// The tutorial in one call: a namespace that reaches the outside through
// eth0 with NAT, and everything removed again. Needs root.
func ExampleConnect() {
	ns, err := netns.New("example-ns1")
	if err != nil {
		log.Fatal(err)
	}
	defer netns.Delete("example-ns1")
	defer ns.Close()

	l, err := nat.Connect(ns, "eth0", netip.MustParsePrefix("10.0.0.0/24"))
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	fmt.Println(l) // 10.0.0.0/24: nsn-… (10.0.0.1) <-> eth0 (10.0.0.2) via eth0

	if err := ns.Run(exec.Command("ping", "-c1", "192.0.2.1")); err != nil {
		log.Print(err)
	}
}

// Options: the uplink of the default route (""), fixed names, siblings
// that may reach each other.
func ExampleConfig_Connect() {
	ns, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	cfg := nat.Config{HostVeth: "web-host", NSVeth: "eth0", MTU: 1400, AllowSiblings: true}
	l, err := cfg.Connect(ns, "", netip.MustParsePrefix("10.1.0.0/24"))
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
}

// Many links torn down at once, and leftovers of crashed processes swept
// at start-up.
func ExampleCloseAll() {
	if res, err := nat.Sweep(nil); err == nil && len(res.Links) > 0 {
		log.Printf("removed %d links left by dead processes", len(res.Links))
	}
	var links []*nat.Link
	for i := range 100 {
		ns, err := netns.NewAnonymous()
		if err != nil {
			log.Fatal(err)
		}
		defer ns.Close()
		l, err := nat.Connect(ns, "eth0", netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 2, byte(i), 0}), 24))
		if err != nil {
			log.Fatal(err)
		}
		links = append(links, l)
	}
	if err := nat.CloseAll(links...); err != nil {
		log.Fatal(err)
	}
}
