package network_test

import (
	"bufio"
	"fmt"
	"log"
	"net/netip"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nat/network"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// A server and a client on one network: the client reaches the server by
// name, and the outside reaches it through a published port. The example
// runs in a private world (nstest): the uplink up0 with 203.0.113.2, an
// outside host 203.0.113.1; on a real host, name the real uplink (or ""
// for the default route's link).
func Example() {
	w, err := nstest.BuildWorld("", "inet-network") // up0 in this (private) namespace
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	n, err := network.Create(network.Config{Uplink: "up0", Prefix: netip.MustParsePrefix("10.0.20.0/24")})
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	serverNS, _ := netns.NewAnonymous()
	defer serverNS.Close()
	clientNS, _ := netns.NewAnonymous()
	defer clientNS.Close()
	srv, err := n.Attach(serverNS, network.MemberConfig{Name: "server", Ports: []nat.Port{{Protocol: "tcp", HostPort: 18080, NSPort: 8080}}})
	if err != nil {
		log.Fatal(err)
	}
	cli, err := n.Attach(clientNS, network.MemberConfig{Name: "client"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(srv.Addr, cli.Addr, n.Gateway)

	l, err := serverNS.Listen("tcp", ":8080")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, "hello from the server")
			c.Close()
		}
	}()
	for _, from := range []struct {
		ns   *netns.Handle
		addr string
	}{{clientNS, "server:8080"}, {w.Inet, "203.0.113.2:18080"}} {
		c, err := from.ns.Dial("tcp", from.addr)
		if err != nil {
			log.Fatal(err)
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		fmt.Print(from.addr, ": ", line)
	}
	if err := n.Close(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// 10.0.20.2 10.0.20.3 10.0.20.1
	// server:8080: hello from the server
	// 203.0.113.2:18080: hello from the server
}
