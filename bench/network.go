//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"time"

	"github.com/google/nftables"
	"github.com/nsnet/nsnet/nat/network"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// networks measures nat/network (issue 29): the cost of one more Attach
// to a network of 10 members and to one of n, the nftables rules (both of
// the library's tables) with 1 network of 10, 1 of n and n/10 networks of
// 10, and member-to-member TCP throughput against two namespaces on a
// bridge made with the shell's commands, in alternating rounds.
func networks(w *nstest.World, n, rounds int) {
	// Attach at 10 and at n.
	const probe = 20
	net1, err := network.Create(network.Config{Uplink: w.Uplink, Prefix: netip.MustParsePrefix("10.90.0.0/16"), NoDNS: false})
	check(err)
	var spaces []*netns.Handle
	attach := func(k int) []float64 {
		var times []float64
		for range k {
			ns, err := netns.NewAnonymous()
			check(err)
			spaces = append(spaces, ns)
			t0 := time.Now()
			_, err = net1.Attach(ns, network.MemberConfig{Name: fmt.Sprintf("m%d", len(spaces))})
			check(err)
			times = append(times, ms(time.Since(t0)))
		}
		return times
	}
	attach(10)
	at10 := attach(probe)
	for len(spaces) < n {
		attach(min(100, n-len(spaces)))
	}
	atN := attach(probe)
	rulesBig := countAllRules()
	t0 := time.Now()
	check(net1.Close())
	closeBig := time.Since(t0)
	for _, ns := range spaces {
		ns.Close()
	}
	spaces = nil
	fmt.Printf("Attach (median of %d): %.2f ms at 10 members, %.2f ms at %d: %.2f×; Close of the network of %d: %.0f ms\n",
		probe, median(at10), median(atN), len(at10)+n, median(atN)/median(at10), n+probe+10, ms(closeBig))

	// Rules: 1 network of 10, n/10 networks of 10.
	var nets []*network.Network
	for i := range max(n/10, 1) {
		nn, err := network.Create(network.Config{Uplink: w.Uplink, Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 91, byte(i), 0}), 24)})
		check(err)
		nets = append(nets, nn)
		for range 10 {
			ns, err := netns.NewAnonymous()
			check(err)
			spaces = append(spaces, ns)
			_, err = nn.Attach(ns, network.MemberConfig{})
			check(err)
		}
		if i == 0 {
			fmt.Printf("nftables rules / base chains (inet + bridge tables): %v with 1 network of 10", countAllRules())
		}
	}
	fmt.Printf(", %v with %d networks of 10, %v with 1 network of %d\n", countAllRules(), len(nets), rulesBig, n+probe+10)
	for _, nn := range nets {
		check(nn.Close())
	}
	for _, ns := range spaces {
		ns.Close()
	}

	// Member to member throughput against a bridge made by hand.
	if _, err := exec.LookPath("iperf3"); err != nil {
		fmt.Println("(no iperf3: no throughput)")
		return
	}
	if rounds == 0 {
		return
	}
	var hand, lib, ratios []float64
	for r := range rounds {
		h, l := bridgeRound(w, true), bridgeRound(w, false)
		if h == 0 || l == 0 {
			fmt.Printf("round %d: iperf3 failed (%.2f, %.2f): not counted\n", r+1, h, l)
			continue
		}
		hand, lib, ratios = append(hand, h), append(lib, l), append(ratios, l/h)
		fmt.Printf("round %d: bridge by hand %.2f Gbit/s, nsnet network %.2f (%.2f)\n", r+1, h, l, l/h)
	}
	fmt.Printf("member to member TCP, %d alternating rounds of 3 s: bridge by hand %.2f Gbit/s, nsnet network %.2f (medians); "+
		"ratio of each round's pair: median %.2f\n", len(ratios), median(hand), median(lib), median(ratios))
	if g, err := dockerNetwork(w); err != nil {
		fmt.Println("Docker network: not measured:", err)
	} else {
		fmt.Printf("Docker network (docker.io, docker run --network, the server by name), after the rounds: %.2f Gbit/s (median of 3)\n", g)
	}
}

// bridgeRound puts two named namespaces on a bridge, by hand (the shell's
// commands) or as an nsnet network, and measures iperf3 TCP from one to
// the other.
func bridgeRound(w *nstest.World, byHand bool) float64 {
	names := []string{"brb-a", "brb-b"}
	var hs []*netns.Handle
	for _, name := range names {
		h, err := netns.New(name)
		check(err)
		hs = append(hs, h)
	}
	defer func() {
		for i, name := range names {
			hs[i].Close()
			check(netns.Delete(name))
		}
	}()
	if byHand {
		run("ip", "link", "add", "brb0", "type", "bridge")
		run("ip", "address", "add", "10.92.0.1/24", "dev", "brb0")
		run("ip", "link", "set", "brb0", "up")
		for i, name := range names {
			host := fmt.Sprintf("brb-v%d", i)
			run("ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", name)
			run("ip", "link", "set", host, "master", "brb0")
			run("ip", "link", "set", host, "up")
			run("ip", "-n", name, "address", "add", fmt.Sprintf("10.92.0.%d/24", i+2), "dev", "eth0")
			run("ip", "-n", name, "link", "set", "eth0", "up")
			run("ip", "-n", name, "link", "set", "lo", "up")
		}
		defer run("ip", "link", "del", "brb0")
	} else {
		n, err := network.Create(network.Config{Uplink: w.Uplink, Prefix: netip.MustParsePrefix("10.92.0.0/24")})
		check(err)
		defer func() { check(n.Close()) }()
		for _, h := range hs {
			_, err := n.Attach(h, network.MemberConfig{})
			check(err)
		}
	}
	return iperfTCP(names[0], names[1], "10.92.0.2")
}

// iperfTCP runs iperf3's TCP test for 3 s from the namespace from to the
// server in the namespace to, at addr, and returns Gbit/s received.
func iperfTCP(to, from, addr string) float64 {
	return again(func() float64 {
		g, why, err := tcpReceived(iperfJSON(to, from, addr, "-t", "3"))
		check(err)
		if g == 0 {
			fmt.Fprintf(os.Stderr, "iperf3 %s -> %s: %s\n", from, addr, why)
		}
		return g
	})
}

// countAllRules counts the rules and base chains of the library's inet
// and bridge tables.
func countAllRules() [2]int {
	r := countRules()
	c, err := nftables.New()
	check(err)
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyBridge)
	check(err)
	t := &nftables.Table{Family: nftables.TableFamilyBridge, Name: "nsnet"}
	for _, ch := range chains {
		if ch.Table.Name != "nsnet" {
			continue
		}
		if ch.Hooknum != nil {
			r[1]++
		}
		rs, err := c.GetRules(t, ch)
		check(err)
		r[0] += len(rs)
	}
	return r
}
