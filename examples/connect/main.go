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
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"

	"github.com/nsnet/nsnet/internal/demo"
	"github.com/nsnet/nsnet/internal/world"
	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
)

func main() {
	uplink := flag.String("uplink", "", "run on the real host through this link (default: a private world)")
	probe := flag.String("probe", "", "with -uplink: a TCP HOST:PORT outside to connect to")
	cidr := flag.String("cidr", "10.0.0.0/24", "the namespace's network")
	flag.Parse()
	prefix, err := netip.ParsePrefix(*cidr)
	if err != nil {
		log.Fatal(err)
	}
	target := *probe
	if *uplink == "" {
		w := demo.Private()
		defer w.Close()
		*uplink = world.Uplink
		target = world.Outside.String() + ":8080"
		if err := demo.EchoServer(w.Inet, target); err != nil {
			log.Fatal(err)
		}
	}
	if err := run(*uplink, prefix, target); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

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
