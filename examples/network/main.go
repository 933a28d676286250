//go:build linux

// Command network shows the common shape of an integration test: a
// server and two clients, each in a namespace of its own, on one network
// (nat/network: a bridge nsnet owns, as "docker network create" and
// "docker run --network" give). The clients find the server by its name,
// talk to it directly, reach the outside masqueraded, and the outside
// reaches the server through a published port. It runs in a private
// world of its own (nstest.Isolate), safe on any Linux machine, as root or
// not:
//
//	go run ./examples/network
package main

import (
	"bufio"
	"fmt"
	"log"
	"net"
	"net/netip"
	"strings"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nat/network"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

func main() {
	w, err := nstest.Isolate() // re-runs this program in private namespaces; returns only there
	if err != nil {
		log.Fatal(err)
	}
	err = run(w)
	w.Close()
	if err != nil {
		log.Fatal(err)
	}
}

func run(w *nstest.World) error {
	n, err := network.Create(network.Config{Uplink: w.Uplink,
		Prefix: netip.MustParsePrefix("10.0.10.0/24"), Prefix6: netip.MustParsePrefix("fd00:10::/64")})
	if err != nil {
		return err
	}
	defer n.Close()
	fmt.Println(n)

	members := map[string]*netns.Handle{}
	for _, name := range []string{"server", "client1", "client2"} {
		ns, err := netns.NewAnonymous()
		if err != nil {
			return err
		}
		defer ns.Close()
		m, err := n.Attach(ns, network.MemberConfig{Name: name})
		if err != nil {
			return err
		}
		fmt.Println(m)
		members[name] = ns
	}

	// The server answers each connection with what it sees of it.
	l, err := members["server"].Listen("tcp", ":8080")
	if err != nil {
		return err
	}
	defer l.Close()
	go serve(l)

	// The clients dial it by name: the namespace resolves "server" with
	// the network's name server, as its programs would.
	for _, client := range []string{"client1", "client2"} {
		for _, to := range []string{"server:8080", "server.:8080"} {
			answer, err := ask(members[client], "tcp", to)
			if err != nil {
				return fmt.Errorf("%s: %w", client, err)
			}
			fmt.Printf("%s -> %s: %s\n", client, to, answer)
		}
	}
	// IPv6 by name too.
	answer, err := ask(members["client1"], "tcp6", "server:8080")
	if err != nil {
		return err
	}
	fmt.Printf("client1 -> server:8080 over IPv6: %s\n", answer)

	// The outside, masqueraded.
	out, err := w.Inet.Listen("tcp", w.Outside.String()+":9000")
	if err != nil {
		return err
	}
	defer out.Close()
	go serve(out)
	answer, err = ask(members["client2"], "tcp", w.Outside.String()+":9000")
	if err != nil {
		return err
	}
	fmt.Printf("client2 -> the outside host: %s\n", answer)

	// The outside, to the server's published port.
	srv := n.Members()[0]
	if err := srv.Publish(nat.Port{Protocol: "tcp", HostPort: 18080, NSPort: 8080}); err != nil {
		return err
	}
	answer, err = ask(w.Inet, "tcp", w.UplinkAddr.Addr().String()+":18080")
	if err != nil {
		return err
	}
	fmt.Printf("the outside host -> %s:18080 (published): %s\n", w.UplinkAddr.Addr(), answer)

	if err := n.Close(); err != nil {
		return err
	}
	fmt.Println("network closed: bridge, members, names and rules gone")
	return nil
}

func serve(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		fmt.Fprintf(c, "hello %s, I am %s\n", c.RemoteAddr().(*net.TCPAddr).IP, c.LocalAddr().(*net.TCPAddr).IP)
		c.Close()
	}
}

// ask dials address from inside ns and returns the line it answers.
func ask(ns *netns.Handle, network, address string) (string, error) {
	c, err := ns.Dial(network, address)
	if err != nil {
		return "", err
	}
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}
