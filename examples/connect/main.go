// Command connect does the whole tutorial with one call, nat.Connect, then
// proves the namespace reaches the outside and removes everything with
// Link.Close.
//
// By default it runs in a private world of its own (nstest.Isolate: its
// own network and mount namespaces, an uplink up0 = 203.0.113.2/24 and an
// outside host 203.0.113.1 with a TCP echo server), so it is safe on any
// Linux machine:
//
//	go run ./examples/connect   # as root or not
//
// With -uplink it connects through a real link of the host instead, and
// -probe HOST:PORT names a TCP service outside to connect to. The
// namespace's network is 10.0.0.0/24; -ipv6 adds fd00:1::/64 (dual stack:
// in the private world, the outside host 2001:db8::1 is reached too).
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/netip"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

func main() {
	uplink := flag.String("uplink", "", "connect through this link of the real host (default: a private world)")
	probe := flag.String("probe", "", "with -uplink: a TCP HOST:PORT outside to connect to")
	ipv6 := flag.Bool("ipv6", false, "give the namespace an IPv6 network too (fd00:1::/64)")
	flag.Parse()
	var w *nstest.World
	if *uplink == "" {
		// Re-runs this program inside private namespaces; returns only there.
		var err error
		if w, err = nstest.Isolate(); err != nil {
			log.Fatal(err)
		}
		*uplink = w.Uplink
		fmt.Printf("# private world: uplink %s %v, outside host %v\n", w.Uplink, w.UplinkAddr, w.Outside)
	}
	var cfg nat.Config
	if *ipv6 {
		cfg.Prefix6 = netip.MustParsePrefix("fd00:1::/64")
	}
	err := run(cfg, *uplink, netip.MustParsePrefix("10.0.0.0/24"), *probe, w)
	if w != nil {
		w.Close()
	}
	if err != nil {
		log.Fatal(err) // after run's deferred clean-ups: log.Fatal runs none
	}
}

func run(cfg nat.Config, uplink string, prefix netip.Prefix, probe string, w *nstest.World) (err error) {
	ns, err := netns.NewAnonymous()
	if err != nil {
		return err
	}
	defer ns.Close()

	l, err := cfg.Connect(ns, uplink, prefix)
	if err != nil {
		return err
	}
	defer func() {
		err = errors.Join(err, l.Close())
		fmt.Println("closed: links, addresses, routes, rules and forwarding are as before")
	}()
	fmt.Println("connected:", l)

	switch {
	case w != nil:
		// The outside host's echo server says whom it saw: the uplink's
		// address, as the namespace's traffic is masqueraded.
		outside := []netip.Addr{w.Outside}
		if l.Prefix6.IsValid() {
			outside = append(outside, w.Outside6)
		}
		for _, a := range outside {
			target := netip.AddrPortFrom(a, 8080).String()
			srv, err := nstest.Serve(w.Inet, target)
			if err != nil {
				return err
			}
			defer srv.Close()
			seen, err := nstest.Echo(ns, target)
			if err != nil {
				return fmt.Errorf("connectivity check: %w", err)
			}
			fmt.Printf("from inside the namespace, TCP to %s: the outside host saw %s\n", target, seen)
		}
	case probe != "":
		var c net.Conn
		err := ns.Do(func() (err error) { c, err = net.DialTimeout("tcp", probe, 3*time.Second); return err })
		if err != nil {
			return fmt.Errorf("connectivity check: %w", err)
		}
		fmt.Printf("from inside the namespace, TCP to %s: connected from %s\n", probe, c.LocalAddr())
		c.Close()
	}
	return nil
}
