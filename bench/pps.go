//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// packetRate compares the small-packet forwarding rate of the tutorial's
// own rules (a veth pair and "iptables -t nat -A POSTROUTING -s NET -o up0
// -j MASQUERADE" and the two FORWARD rules, with ip_forward on) with
// nsnet's on the same world: rounds alternate, each one sets its side up,
// sends 64-byte UDP datagrams as fast as iperf3 can for 3 s from the
// namespace to the outside host, and tears it down. It prints the medians
// of the datagrams received per second, and their ratio. Needs iperf3 and
// iptables (nf_tables backend).
func packetRate(w *nstest.World, rounds int) {
	for _, c := range []string{"iperf3", "iptables"} {
		if _, err := exec.LookPath(c); err != nil {
			check(fmt.Errorf("-pps needs %s", c))
		}
	}
	var tutorial, nsnet []float64
	for r := range rounds {
		tutorial = append(tutorial, ppsRound(w, fmt.Sprintf("ppt%d", r), true))
		nsnet = append(nsnet, ppsRound(w, fmt.Sprintf("ppn%d", r), false))
		fmt.Printf("round %d: tutorial %.0f, nsnet %.0f datagrams/s (%.2f)\n", r+1, tutorial[r], nsnet[r], nsnet[r]/tutorial[r])
	}
	below := 0
	var ratios []float64
	for r := range rounds {
		if nsnet[r]/tutorial[r] < 0.9 {
			below++
		}
		ratios = append(ratios, nsnet[r]/tutorial[r])
	}
	// The ratio of each round's pair, taken a few seconds apart, is less
	// exposed to the machine's changing load than the ratio of medians.
	fmt.Printf("64-byte UDP, %d alternating rounds of 3 s: tutorial's rules %.0f datagrams/s, nsnet %.0f (medians), ratio %.2f; each round's ratio: median %.2f; %d of %d rounds below 0.9\n",
		rounds, median(tutorial), median(nsnet), median(nsnet)/median(tutorial), median(ratios), below, rounds)
}

// ppsRound sets one side up in a new namespace called name, measures, and
// tears it down.
func ppsRound(w *nstest.World, name string, tutorial bool) float64 {
	ns, err := netns.New(name)
	check(err)
	defer func() { ns.Close(); check(netns.Delete(name)) }()
	prefix := netip.MustParsePrefix("10.77.0.0/24")
	if tutorial {
		sh := func(args ...string) { run(args...) }
		sh("ip", "link", "add", "ppv-a", "type", "veth", "peer", "name", "ppv-b")
		sh("ip", "link", "set", "dev", "ppv-b", "netns", name)
		sh("ip", "link", "set", "dev", "ppv-a", "up")
		sh("ip", "address", "add", "10.77.0.1/24", "dev", "ppv-a")
		sh("ip", "netns", "exec", name, "ip", "link", "set", "dev", "ppv-b", "up")
		sh("ip", "netns", "exec", name, "ip", "address", "add", "10.77.0.2/24", "dev", "ppv-b")
		sh("iptables", "-t", "nat", "-A", "POSTROUTING", "-s", prefix.String(), "-o", w.Uplink, "-j", "MASQUERADE")
		sh("iptables", "-t", "filter", "-A", "FORWARD", "-s", prefix.String(), "-j", "ACCEPT")
		sh("iptables", "-t", "filter", "-A", "FORWARD", "-d", prefix.String(), "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
		sh("ip", "netns", "exec", name, "ip", "route", "add", "default", "via", "10.77.0.1")
		check(os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0))
		defer func() {
			check(os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0\n"), 0))
			sh("iptables", "-t", "nat", "-F", "POSTROUTING")
			sh("iptables", "-t", "filter", "-F", "FORWARD")
			sh("ip", "link", "del", "ppv-a")
		}()
	} else {
		l, err := nat.Config{DNS: nat.DNSNone}.Connect(ns, w.Uplink, prefix)
		check(err)
		defer func() { check(l.Close()) }()
	}
	return iperfUDP(w, name)
}

// iperfUDP runs iperf3's UDP test with 64-byte datagrams for 3 s from the
// namespace called name to the outside host, and returns the datagrams
// the server received per second.
func iperfUDP(w *nstest.World, name string) float64 {
	return again(func() float64 {
		out := iperfJSON(w.InetName, name, w.Outside.String(), "-u", "-b", "0", "-l", "64", "-t", "3")
		var res struct {
			End struct {
				Sum struct {
					Packets     float64 `json:"packets"`
					LostPackets float64 `json:"lost_packets"`
					Seconds     float64 `json:"seconds"`
				} `json:"sum"`
			} `json:"end"`
		}
		check(json.Unmarshal(out, &res))
		s := res.End.Sum
		if s.Seconds <= 0 {
			return 0
		}
		return (s.Packets - s.LostPackets) / s.Seconds
	})
}

// again runs a measurement up to four times while it gives 0: iperf3 now
// and then reports a test of 0 s (its server's result lost).
func again(measure func() float64) float64 {
	for try := 0; ; try++ {
		if r := measure(); r > 0 || try == 3 {
			return r
		}
	}
}

// iperfJSON runs an iperf3 server for one test in the namespace called
// server, bound to addr, and the client with args in the namespace called
// client, trying again until the server listens, and returns the client's
// JSON report.
func iperfJSON(server, client, addr string, args ...string) []byte {
	srv := exec.Command("ip", "netns", "exec", server, "iperf3", "-s", "-1", "-B", addr)
	check(srv.Start())
	defer func() { srv.Process.Kill(); srv.Wait() }()
	var out []byte
	var err error
	for try := 0; try < 50; try++ { // until the server listens
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", client, "iperf3", "-c", addr, "-J"}, args...)...).Output()
		cancel()
		if err == nil || !strings.Contains(string(out), "unable to connect") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	check(err)
	return out
}

// tcpReceived reads the bits per second received from iperf3's TCP JSON
// report, in Gbit/s, and the error it reports (for a result of 0).
func tcpReceived(out []byte) (float64, string, error) {
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	err := json.Unmarshal(out, &res)
	return res.End.SumReceived.BitsPerSecond / 1e9, res.Error, err
}

// run runs a command, failing the bench with its output.
func run(args ...string) {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		check(fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out))
	}
}
