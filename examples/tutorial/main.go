// Command tutorial walks the classic "network namespace + NAT" tutorial
// step by step with nsnet's packages, printing each step's shell command,
// the call that replaces it and the resulting state, then proves the
// namespace reaches the outside and removes everything.
//
// By default it runs in a private world of its own first (nstest.Isolate:
// network and mount namespaces of its own, an uplink up0 = 203.0.113.2/24
// and an outside host 203.0.113.1 with a TCP echo server), so it is safe
// on any Linux machine:
//
//	go run ./examples/tutorial   # as root or not
//
// With -uplink it runs on the real host instead, connecting through that
// link; -probe HOST:PORT then names a TCP service outside to try.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/nsnet/nsnet/addr"
	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/route"
	"github.com/nsnet/nsnet/veth"
)

func main() {
	uplink := flag.String("uplink", "", "run on the real host, NAT through this link (default: a private world)")
	probe := flag.String("probe", "", "with -uplink: a TCP HOST:PORT outside to connect to")
	cidr := flag.String("cidr", "10.0.0.0/24", "the namespace's network")
	flag.Parse()
	prefix, err := netip.ParsePrefix(*cidr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tutorial:", err)
		os.Exit(2)
	}
	var w *nstest.World
	if *uplink == "" {
		// Re-runs this program inside private namespaces; returns only there.
		if w, err = nstest.Isolate(); err != nil {
			fmt.Fprintln(os.Stderr, "tutorial:", err)
			os.Exit(1)
		}
		*uplink, *probe = w.Uplink, w.Outside.String()+":8080"
		srv, err := nstest.Serve(w.Inet, *probe)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tutorial:", err)
			os.Exit(1)
		}
		defer srv.Close()
		fmt.Printf("# private world: uplink %s %v, outside host %v with a TCP echo server\n\n", w.Uplink, w.UplinkAddr, w.Outside)
	}
	err = run(*uplink, prefix, *probe)
	if w != nil {
		w.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tutorial:", err)
		os.Exit(1)
	}
}

func step(shell, call string) {
	fmt.Printf("$ %s\n  -> %s\n", shell, call)
}

func run(uplink string, prefix netip.Prefix, target string) (err error) {
	hostAddr := netip.PrefixFrom(prefix.Addr().Next(), prefix.Bits())
	nsAddr := netip.PrefixFrom(hostAddr.Addr().Next(), prefix.Bits())
	var undo []func() error
	defer func() {
		fmt.Println("\n# clean up, in reverse order")
		for i := len(undo) - 1; i >= 0; i-- {
			if e := undo[i](); e != nil && err == nil {
				err = e
			}
		}
		fmt.Println("done: nothing left behind")
	}()

	step("ip netns add example-ns1", `netns.New("example-ns1")`)
	ns, err := netns.New("example-ns1")
	if err != nil {
		return err
	}
	undo = append(undo, func() error { ns.Close(); return netns.Delete("example-ns1") })

	step("ip link add ex-veth-a type veth peer ex-veth-b; ip link set ex-veth-b netns example-ns1",
		`veth.Create(nil, veth.Config{Name: "ex-veth-a", PeerName: "ex-veth-b", PeerNS: ns})  // peer made inside, one message`)
	if err := veth.Create(nil, veth.Config{Name: "ex-veth-a", PeerName: "ex-veth-b", PeerNS: ns}); err != nil {
		return err
	}
	undo = append(undo, func() error { return veth.Delete(nil, "ex-veth-a") })

	step("ip link set ex-veth-a up; ip netns exec example-ns1 ip link set ex-veth-b up (and lo)",
		`veth.SetUp(nil, "ex-veth-a"); veth.SetUp(ns, "ex-veth-b"); veth.SetUp(ns, "lo")`)
	for _, e := range []error{veth.SetUp(nil, "ex-veth-a"), veth.SetUp(ns, "ex-veth-b"), veth.SetUp(ns, "lo")} {
		if e != nil {
			return e
		}
	}

	step(fmt.Sprintf("ip address add %v dev ex-veth-a; ip netns exec example-ns1 ip address add %v dev ex-veth-b", hostAddr, nsAddr),
		fmt.Sprintf(`addr.Add(nil, "ex-veth-a", %v); addr.Add(ns, "ex-veth-b", %v)`, hostAddr, nsAddr))
	if err := addr.Add(nil, "ex-veth-a", hostAddr); err != nil {
		return err
	}
	if err := addr.Add(ns, "ex-veth-b", nsAddr); err != nil {
		return err
	}

	step("ip netns exec example-ns1 ip route add default via "+hostAddr.Addr().String(),
		fmt.Sprintf("route.AddDefault(ns, %v)", hostAddr.Addr()))
	if err := route.AddDefault(ns, hostAddr.Addr()); err != nil {
		return err
	}

	step(fmt.Sprintf("iptables -t nat -A POSTROUTING -s %v -o %s -j MASQUERADE; iptables -A FORWARD ... (x2); sysctl net.ipv4.ip_forward=1", prefix, uplink),
		fmt.Sprintf(`nat.AddRules(nil, "ex-veth-a", %q, %v)  // own nftables table, per-link forwarding`, uplink, prefix))
	rules, err := nat.AddRules(nil, "ex-veth-a", uplink, prefix)
	if err != nil {
		return err
	}
	undo = append(undo, rules.Close)

	fmt.Println("\n# state inside example-ns1 (ip link / ip address / ip route)")
	links, err := veth.List(ns)
	if err != nil {
		return err
	}
	fmt.Print(veth.Format(links))
	addrs, err := addr.List(ns, "ex-veth-b")
	if err != nil {
		return err
	}
	for _, a := range addrs {
		fmt.Printf("    inet %v dev ex-veth-b\n", a.Prefix)
	}
	routes, err := route.List(ns, &route.Filter{Family: 4})
	if err != nil {
		return err
	}
	for _, r := range routes {
		fmt.Printf("    route %v\n", r)
	}

	if target == "" {
		fmt.Println("\n# no -probe given: skipping the connectivity check")
		return nil
	}
	fmt.Printf("\n# from inside example-ns1: TCP to %s\n", target)
	var c net.Conn
	err = ns.Do(func() (err error) { c, err = net.DialTimeout("tcp", target, 3*time.Second); return err })
	if err != nil {
		return fmt.Errorf("connectivity check: %w", err)
	}
	defer c.Close()
	// The private world's echo server first says whom it sees: the
	// uplink's address, as the namespace's traffic is masqueraded.
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 64)
	n, _ := c.Read(buf)
	fmt.Printf("  connected from %s; the outside says: %s", c.LocalAddr(), buf[:n])
	return nil
}
