package netns_test

import (
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"

	"github.com/nsnet/nsnet/netns"
)

// Create a named namespace (ip netns add), list the names (ip netns list)
// and delete it (ip netns del).
func Example() {
	ns, err := netns.New("blue")
	if err != nil {
		log.Fatal(err)
	}
	names, err := netns.List()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(names, ns.Name())

	ns.Close()
	if err := netns.Delete("blue"); err != nil {
		log.Fatal(err)
	}
	names, _ = netns.List()
	fmt.Println(names)
	// Output:
	// [blue] blue
	// []
}

// Run a command inside the namespace (ip netns exec): a fresh namespace
// has only lo, down.
func ExampleHandle_Run() {
	ns, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	cmd := exec.Command("sh", "-c", "ip -o link show | cut -d' ' -f2,9")
	cmd.Stdout = os.Stdout
	if err := ns.Run(cmd); err != nil {
		log.Fatal(err)
	}
	// Output: lo: DOWN
}

// Start a long-running process in the namespace; it stays there, and the
// caller's own thread never moves.
func ExampleHandle_Start() {
	ns, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	cmd := exec.Command("sleep", "60")
	if err := ns.Start(cmd); err != nil {
		log.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()

	in, err := netns.OpenPID(cmd.Process.Pid)
	if err != nil {
		log.Fatal(err)
	}
	defer in.Close()
	fmt.Println("sleep runs in the namespace:", in.Equal(ns))
	// Output: sleep runs in the namespace: true
}

// Run Go code on a thread inside the namespace; the caller's thread stays
// where it is. Sockets made inside stay in the namespace.
func ExampleHandle_Do() {
	ns, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	err = ns.Do(func() error {
		ifaces, err := net.Interfaces()
		if err != nil {
			return err
		}
		for _, i := range ifaces {
			fmt.Println(i.Index, i.Name)
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output: 1 lo
}
