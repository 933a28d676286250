package nat_test

import (
	"fmt"
	"log"
	"net/netip"

	"github.com/nsnet/nsnet/addr"
	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/route"
	"github.com/nsnet/nsnet/veth"
)

// The tutorial in one call: a namespace that reaches the outside through
// the host's uplink with NAT, and everything removed again. The examples
// run in a private world (nstest): the uplink up0 with 203.0.113.2, an
// outside host 203.0.113.1 with a TCP echo server; on a real host, name
// the real uplink (or "" for the default route's link).
func ExampleConnect() {
	w, err := nstest.BuildWorld("", "inet-connect") // up0 in this (private) namespace
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	echo, err := nstest.Serve(w.Inet, "203.0.113.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	defer echo.Close()

	ns, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	l, err := nat.Connect(ns, "up0", netip.MustParsePrefix("10.0.0.0/24"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(l.Prefix, l.HostAddr, l.NSVeth, l.NSAddr, l.Uplink)

	seen, err := nstest.Echo(ns, "203.0.113.1:8080") // TCP from inside
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("the outside host sees", seen)
	if err := l.Close(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// 10.0.0.0/24 10.0.0.1/24 eth0 10.0.0.2/24 up0
	// the outside host sees 203.0.113.2
}

// Options: the host namespace, the uplink of the default route (""),
// fixed names and addresses, and siblings that may reach each other.
func ExampleConfig_Connect() {
	w, err := nstest.BuildWorld("host-cfg", "inet-cfg")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	if err := route.AddDefault(w.Host, w.Outside); err != nil {
		log.Fatal(err)
	}
	a, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	b, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	cfg := nat.Config{HostNS: w.Host, AllowSiblings: true, MTU: 1400}
	cfg.HostVeth, cfg.NSVeth = "web-host", "web0"
	cfg.NSAddr = netip.MustParseAddr("10.1.0.10")
	la, err := cfg.Connect(a, "", netip.MustParsePrefix("10.1.0.0/24"))
	if err != nil {
		log.Fatal(err)
	}
	defer la.Close()
	fmt.Println(la)

	cfg.HostVeth, cfg.NSVeth, cfg.NSAddr = "db-host", "db0", netip.Addr{}
	lb, err := cfg.Connect(b, "", netip.MustParsePrefix("10.2.0.0/24"))
	if err != nil {
		log.Fatal(err)
	}
	defer lb.Close()
	fmt.Println(lb)

	srv, err := nstest.Serve(b, "10.2.0.2:5432")
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	seen, err := nstest.Echo(a, "10.2.0.2:5432") // sibling to sibling, not masqueraded
	fmt.Println("db sees web as", seen, err)
	// Output:
	// 10.1.0.0/24: host web-host (10.1.0.1) <-> namespace web0 (10.1.0.10), uplink up0
	// 10.2.0.0/24: host db-host (10.2.0.1) <-> namespace db0 (10.2.0.2), uplink up0
	// db sees web as 10.1.0.10 <nil>
}

// The tutorial's iptables and sysctl step alone, for a veth pair built by
// hand with the veth, addr and route packages.
func ExampleAddRules() {
	w, err := nstest.BuildWorld("host-rules", "inet-rules")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	ns, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	for _, err := range []error{
		veth.Create(w.Host, veth.Config{Name: "ex-a", PeerName: "eth0", PeerNS: ns, Up: true}),
		veth.SetUp(ns, "lo"),
		addr.Add(w.Host, "ex-a", netip.MustParsePrefix("10.3.0.1/24")),
		addr.Add(ns, "eth0", netip.MustParsePrefix("10.3.0.2/24")),
		route.AddDefault(ns, netip.MustParseAddr("10.3.0.1")),
	} {
		if err != nil {
			log.Fatal(err)
		}
	}
	defer veth.Delete(w.Host, "ex-a")

	rules, err := nat.AddRules(w.Host, "ex-a", w.Uplink, netip.MustParsePrefix("10.3.0.0/24"))
	if err != nil {
		log.Fatal(err)
	}
	echo, err := nstest.Serve(w.Inet, "203.0.113.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	defer echo.Close()
	seen, err := nstest.Echo(ns, "203.0.113.1:8080")
	fmt.Println("the outside host sees", seen, err)
	if err := rules.Close(); err != nil {
		log.Fatal(err)
	}
	_, err = nstest.Echo(ns, "203.0.113.1:8080")
	fmt.Println("after Close:", err != nil)
	// Output:
	// the outside host sees 203.0.113.2 <nil>
	// after Close: true
}

// Many links torn down at once: one nftables transaction and one RCU
// grace period for all of them. Sweep, at program start, removes what
// crashed processes left (here nothing).
func ExampleCloseAll() {
	w, err := nstest.BuildWorld("host-all", "inet-all")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	res, err := nat.Sweep(w.Host)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("swept: %d links, %d entries\n", len(res.Links), res.Elements)

	var links []*nat.Link
	for i := range 3 {
		ns, err := netns.NewAnonymous()
		if err != nil {
			log.Fatal(err)
		}
		defer ns.Close()
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 4, byte(i), 0}), 24)
		l, err := nat.Config{HostNS: w.Host}.Connect(ns, w.Uplink, p)
		if err != nil {
			log.Fatal(err)
		}
		links = append(links, l)
	}
	if err := nat.CloseAll(links...); err != nil {
		log.Fatal(err)
	}
	left, err := veth.List(w.Host)
	if err != nil {
		log.Fatal(err)
	}
	for _, l := range left {
		fmt.Println(l.Name)
	}
	// Output:
	// swept: 0 links, 0 entries
	// lo
	// up0
}

// Sweep removes the veths, set entries and forwarding that processes
// killed before they closed their links left behind, and never touches
// what live processes own. Call it at start-up.
func ExampleSweep() {
	res, err := nat.Sweep(nil) // nil: this namespace
	if err != nil {
		log.Fatal(err)
	}
	if len(res.Links) > 0 || res.Elements > 0 {
		log.Printf("removed %d links and %d entries of dead processes", len(res.Links), res.Elements)
	}
	fmt.Println("table removed:", res.Table)
	// Output: table removed: false
}

// Publish a port of the namespace ("docker run -p 8080:80"): the outside
// host reaches the namespace's server through the uplink's address, and
// the server sees the client's own address.
func ExampleLink_Publish() {
	w, err := nstest.BuildWorld("host-pub", "inet-pub")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	ns, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	l, err := nat.Config{HostNS: w.Host}.Connect(ns, w.Uplink, netip.MustParsePrefix("10.5.0.0/24"))
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	if err := l.Publish(nat.Port{Protocol: "tcp", HostPort: 8080, NSPort: 80}); err != nil {
		log.Fatal(err)
	}
	srv, err := nstest.Serve(ns, "10.5.0.2:80") // the namespace's server
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	seen, err := nstest.Echo(w.Inet, "203.0.113.2:8080") // from the outside host
	fmt.Println(l.Ports()[0], "- the server sees", seen, err)
	// Output: tcp 203.0.113.2:8080->80 - the server sees 203.0.113.1 <nil>
}

// Dual stack: an IPv6 network beside the IPv4 one, masqueraded out of the
// uplink's global IPv6 address (2001:db8::2 here). An IPv6 prefix as
// Connect's cidr alone makes an IPv6-only link.
func ExampleConfig_Connect_dualStack() {
	w, err := nstest.BuildWorld("host-ds", "inet-ds") // up0 has 2001:db8::2, the outside host 2001:db8::1
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	echo, err := nstest.Serve(w.Inet, "[2001:db8::1]:8080")
	if err != nil {
		log.Fatal(err)
	}
	defer echo.Close()
	ns, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()

	cfg := nat.Config{HostNS: w.Host, Prefix6: netip.MustParsePrefix("fd00:1::/64")}
	l, err := cfg.Connect(ns, "up0", netip.MustParsePrefix("10.0.0.0/24"))
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	fmt.Println(l.NSAddr, l.NSAddr6)
	seen, err := nstest.Echo(ns, "[2001:db8::1]:8080")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("the outside host sees", seen)
	// Output:
	// 10.0.0.2/24 fd00:1::2/64
	// the outside host sees 2001:db8::2
}

// A persistent link outlives the process that made it (a CNI plugin's
// ADD); any process removes it by its host end's name.
func ExampleRemove() {
	w, err := nstest.BuildWorld("host-rm", "inet-rm")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	ns, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	cfg := nat.Config{HostNS: w.Host, Persistent: true, HostVeth: "nsp-example", Tag: "example"}
	if _, err := cfg.Connect(ns, "up0", netip.MustParsePrefix("10.0.0.0/24")); err != nil {
		log.Fatal(err)
	}
	// ... later, in any process:
	pls, err := nat.PersistentLinks(w.Host)
	if err != nil {
		log.Fatal(err)
	}
	for _, pl := range pls {
		fmt.Println(pl.HostVeth, pl.Tag, pl.Up)
		if err := nat.Remove(w.Host, pl.HostVeth); err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// nsp-example example true
}

// Every link nsnet made in a host, of every process, alive or not: what
// "nsnet ls" prints.
func ExampleLinks() {
	w, err := nstest.BuildWorld("host-links", "inet-links")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	ns, err := netns.NewAnonymous()
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	l, err := nat.Config{HostNS: w.Host, Ports: []nat.Port{{Protocol: "tcp", HostAddr: netip.MustParseAddr("203.0.113.2"), HostPort: 8080, NSPort: 80}}}.
		Connect(ns, "up0", netip.MustParsePrefix("10.0.0.0/24"))
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	links, err := nat.Links(w.Host)
	if err != nil {
		log.Fatal(err)
	}
	for _, li := range links {
		fmt.Println(li.HostVeth == l.HostVeth, li.Alive, li.Prefix, li.Uplink, li.Ports)
	}
	// Output:
	// true true 10.0.0.0/24 up0 [tcp 203.0.113.2:8080->80]
}
