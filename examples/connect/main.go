// Command connect does the whole tutorial with one call, nat.Connect, then
// proves the namespace reaches the outside and removes everything with
// Link.Close.
//
// By default it builds its own private world (see examples/tutorial):
//
//	sudo go run ./examples/connect
//
// With -uplink it connects through a real link of the host instead.
package main

import (
	"fmt"
	"log"
	"net/netip"

	"github.com/nsnet/nsnet/internal/demo"
	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
)

func main() { demo.Main(run) }

func run(uplink string, prefix netip.Prefix, target string) error {
	ns, err := netns.New("example-ns1")
	if err != nil {
		return err
	}
	defer netns.Delete("example-ns1")
	defer ns.Close()

	l, err := nat.Connect(ns, uplink, prefix)
	if err != nil {
		return err
	}
	defer func() {
		if err := l.Close(); err != nil {
			log.Print(err)
		}
		fmt.Println("closed: links, addresses, routes, rules and forwarding are as before")
	}()
	fmt.Println("connected:", l)
	if target == "" {
		return nil
	}
	line, err := demo.Dial(ns, target)
	if err != nil {
		return fmt.Errorf("connectivity check: %w", err)
	}
	fmt.Printf("from inside example-ns1, %s says: %s", target, line)
	return nil
}
