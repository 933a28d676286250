package netns_test

import (
	"fmt"
	"log"
	"os/exec"

	"github.com/nsnet/nsnet/netns"
)

// Create a named namespace (ip netns add), run a command in it
// (ip netns exec) and delete it (ip netns del). Needs root.
func Example() {
	ns, err := netns.New("example-ns1")
	if err != nil {
		log.Fatal(err)
	}
	defer netns.Delete("example-ns1")
	defer ns.Close()

	cmd := exec.Command("ip", "link", "show")
	if err := ns.Run(cmd); err != nil {
		log.Fatal(err)
	}
	fmt.Println(ns)
}

// Run Go code on a thread inside the namespace; the caller's thread stays
// where it is.
func ExampleHandle_Do() {
	ns, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	err = ns.Do(func() error {
		cur, err := netns.Current()
		if err != nil {
			return err
		}
		defer cur.Close()
		fmt.Println("inside:", cur.Equal(ns))
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
}
