package qdisc_test

import (
	"fmt"
	"log"
	"time"

	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/qdisc"
	"github.com/nsnet/nsnet/veth"
)

// A slow link: 10 Mbit/s out of one end of a veth pair, changed live, then
// taken away. (The example runs in a private world: see package nstest.)
func ExampleSet() {
	ns, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	if err := veth.Create(ns, veth.Config{Name: "slow0", PeerName: "slow1"}); err != nil {
		log.Fatal(err)
	}
	im := qdisc.Impairment{Rate: 10e6}
	if err := qdisc.Set(ns, "slow0", im); err != nil {
		log.Fatal(err)
	}
	fmt.Println("slow0:", im)
	im.Rate = 20e6 // live: the link stays up, its connections go on
	if err := qdisc.Set(ns, "slow0", im); err != nil {
		log.Fatal(err)
	}
	fmt.Println("slow0:", im)
	if err := qdisc.Remove(ns, "slow0"); err != nil {
		log.Fatal(err)
	}
	// Output:
	// slow0: rate 10Mbit
	// slow0: rate 20Mbit
}

// What a test of retry logic asks for (needs the kernel's sch_netem to
// be applied): the values are checked first, by Validate and by Set.
func ExampleImpairment() {
	lossy := qdisc.Impairment{Delay: 50 * time.Millisecond, Jitter: 10 * time.Millisecond, Distribution: "normal", Loss: 1, LossBurst: 3}
	fmt.Println(lossy, lossy.Validate())
	bad := qdisc.Impairment{Reorder: 25}
	fmt.Println(bad.Validate())
	// Output:
	// delay 50ms 10ms distribution normal loss 1% bursts of 3 <nil>
	// qdisc: invalid impairment: Reorder without Delay (packets are reordered by sending some ahead of the delayed others)
}
