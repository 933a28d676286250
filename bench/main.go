//go:build linux

// Command bench measures nsnet against the tutorial's own shell commands
// (seed-shell.sh beside this file: ip + iptables, N namespaces behind one
// uplink), side by side in one run, and prints the ratios. Everything runs
// in private network and mount namespaces made for the run.
//
//	go run ./bench                  # N = 1, 10, 200
//	go run ./bench -n 1,50 -runs 3  # chosen N, best of 3
//	go run ./bench -scale 1000      # scaling, rules, throughput, resources
//	go run ./bench -scale 1000 -ipv6  # the same with dual-stack links
//	NSNET_CNI_PLUGINS=DIR go run ./bench -cni -n 1,10,100  # nsnet-cni against ptp, through libcni
//	go run ./bench -network 1000   # nat/network: Attach at 10 and 1000 members, rules, throughput
//	go run ./bench -pairs 21        # one namespace, 21 alternating pairs, medians
//	go run ./bench -n 10 -par 16    # 16 rounds of sequential vs parallel set-up
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/route"
	"github.com/nsnet/nsnet/veth"
	"golang.org/x/sys/unix"
)

func main() {
	ns := flag.String("n", "1,10,200", "comma-separated numbers of namespaces")
	runs := flag.Int("runs", 1, "runs per N; the best is kept")
	scale := flag.Int("scale", 0, "run the scaling checks with this many namespaces instead")
	probeOnly := flag.Bool("probe", false, "with -scale: only the interleaved comparison of one more namespace (nsnet and the tutorial's ip commands) at 10 links and at -scale")
	pairs := flag.Int("pairs", 0, "instead of the table: set up and tear down one namespace this many times each way, alternating, and print medians")
	parRounds := flag.Int("par", 8, "alternating rounds of sequential against parallel set-up per N (medians)")
	portsN := flag.Int("ports", 0, "instead of the table: published ports, 1 against this many (rules, throughput, publish time)")
	flag.BoolVar(&dualStack, "ipv6", false, "give every link an IPv6 prefix too (dual stack)")
	cniRows := flag.Bool("cni", false, "instead of the table: nsnet-cni against the reference ptp plugin through libcni, for each N (needs NSNET_CNI_PLUGINS)")
	ppsRounds := flag.Int("pps", 0, "instead of the table: 64-byte UDP packet rate, the tutorial's rules against nsnet's, this many alternating rounds (needs iperf3)")
	netN := flag.Int("network", 0, "instead of the table: nat/network, Attach at 10 members against this many, rules with networks, member-to-member throughput against a bridge by hand (-rounds)")
	netRounds := flag.Int("rounds", 5, "alternating throughput rounds for -network")
	teardownRows := flag.Bool("teardown", false, "instead of the table: the tear-down rows (Close alone, Close+Delete, until the kernel is done) for each N")
	script := flag.String("shell", "", "the shell baseline (default: seed-shell.sh next to this program's source)")
	flag.Parse()
	if *scale > 0 || *netN > 0 {
		raiseFileLimit(4*max(*scale, *netN) + 1024)
	}
	w, err := nstest.Isolate() // everything below runs in private namespaces
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	defer w.Close()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Printf("# %s, kernel %s, %d CPUs, %s\n", time.Now().UTC().Format("2006-01-02"), strings.TrimSpace(string(kernel)), runtime.NumCPU(), runtime.Version())
	if *scale > 0 && *probeOnly {
		interleaved(*scale, 50)
		return
	}
	if *scale > 0 {
		scaling(w, *scale)
		return
	}
	if *ppsRounds > 0 {
		packetRate(w, *ppsRounds)
		return
	}
	if *netN > 0 {
		networks(w, *netN, *netRounds)
		return
	}
	if *cniRows {
		var sizes []int
		for _, f := range strings.Split(*ns, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			check(err)
			sizes = append(sizes, n)
		}
		cniBench(w, sizes)
		return
	}
	if *script == "" {
		*script = findScript()
	}
	if *pairs > 0 {
		single(*script, *pairs)
		return
	}
	if *portsN > 0 {
		publishedPorts(w, *portsN)
		return
	}
	if *teardownRows {
		fmt.Println("| N | shell tear-down | nsnet Close alone | nsnet Close+Delete | ratio | until the kernel is done |")
		fmt.Println("|---|---|---|---|---|---|")
		for _, f := range strings.Split(*ns, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			check(err)
			teardown(*script, n)
		}
		fmt.Println("\nper namespace; Close alone and Close+Delete are medians of the namespaces' own times (one after")
		fmt.Println("another); the shell's is its total over N; \"until the kernel is done\" is the time from the first")
		fmt.Println("Close until no device, address or route of the closed links is left in the host, over N.")
		return
	}
	fmt.Println("| N | shell set-up | nsnet set-up | ratio | shell tear-down | nsnet Close+Delete | ratio | nsnet CloseAll+Delete | ratio | sequential / parallel set-up |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, f := range strings.Split(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		check(err)
		var best [5]time.Duration
		for r := 0; r < *runs; r++ {
			shUp, shDown := shell(*script, n)
			libUp, libDown := library(n, false, 1)
			_, bulkDown := library(n, true, 1)
			for i, d := range []time.Duration{shUp, shDown, libUp, libDown, bulkDown} {
				if r == 0 || d < best[i] {
					best[i] = d
				}
			}
		}
		seqUp, parUp := seqPar(n, *parRounds)
		per := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(n)/1e6) }
		ratio := func(a, b time.Duration) string { return fmt.Sprintf("%.1f×", float64(a)/float64(b)) }
		fmt.Printf("| %d | %s | %s | %s | %s | %s | %s | %.3f s total | %s | %s / %s (%.2f) |\n", n,
			per(best[0]), per(best[2]), ratio(best[0], best[2]),
			per(best[1]), per(best[3]), ratio(best[1], best[3]),
			best[4].Seconds(), ratio(best[1], best[4]), per(seqUp), per(parUp), float64(seqUp)/float64(parUp))
	}
	fmt.Println("\nper namespace: set-up is netns.New + nat.Connect; tear-down is Link.Close + netns.Delete;")
	fmt.Println("CloseAll is nat.CloseAll(all) + netns.Delete each; parallel set-up uses", runtime.NumCPU(), "goroutines,")
	fmt.Printf("measured against a sequential one in %d alternating rounds, each after a pause: medians\n", *parRounds)
	fmt.Println("(sequential / parallel > 1: parallel is faster).")
}

// seqPar measures sequential against parallel set-up of n namespaces in
// rounds alternating pairs, each run on its own after a pause that lets the
// kernel finish destroying the previous run's namespaces, and returns the
// medians. One run of a few milliseconds is moved by the machine's load by
// more than the difference in question (single runs gave ratios from 0.8 to
// 1.4 for the same code).
func seqPar(n, rounds int) (seq, par time.Duration) {
	var seqs, pars []float64
	for r := range rounds {
		for i := range 2 {
			settle()
			if (r+i)%2 == 0 {
				d, _ := library(n, true, 1)
				seqs = append(seqs, float64(d))
			} else {
				d, _ := library(n, true, runtime.NumCPU())
				pars = append(pars, float64(d))
			}
		}
	}
	return time.Duration(median(seqs)), time.Duration(median(pars))
}

// single measures N=1 as many alternating pairs (shell, then library, each
// after a pause): a single namespace is one sample per run, which the
// machine's load moves by more than the effects in question, so medians
// over many pairs say more than the best of a few runs.
func single(script string, pairs int) {
	var shUp, shDown, libUp, libDown, ratios []float64
	for range pairs {
		settle()
		su, sd := shell(script, 1)
		settle()
		lu, ld := library(1, false, 1)
		shUp, shDown = append(shUp, ms(su)), append(shDown, ms(sd))
		libUp, libDown = append(libUp, ms(lu)), append(libDown, ms(ld))
		ratios = append(ratios, ms(su)/ms(lu))
	}
	fmt.Printf("one namespace, %d alternating pairs (medians): set-up shell %.2f ms, nsnet %.2f ms, ratio %.1f× (pairs' ratios %.1f–%.1f×);\n",
		pairs, median(shUp), median(libUp), median(shUp)/median(libUp), slices.Min(ratios), slices.Max(ratios))
	fmt.Printf("tear-down shell %.2f ms, nsnet Close+Delete %.2f ms, ratio %.1f×\n",
		median(shDown), median(libDown), median(shDown)/median(libDown))
}

// settle lets the kernel finish what the previous run left it to do in the
// background (namespaces being destroyed, RCU callbacks).
func settle() { time.Sleep(300 * time.Millisecond) }

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func findScript() string {
	for _, p := range []string{"bench/seed-shell.sh", "seed-shell.sh", "../bench/seed-shell.sh"} {
		if _, err := os.Stat(p); err == nil {
			abs, _ := filepath.Abs(p)
			return abs
		}
	}
	check(fmt.Errorf("seed-shell.sh not found: run from the repository root or pass -shell"))
	return ""
}

// shell runs the baseline, which makes its own private namespaces, and
// parses "setup_s=… teardown_s=…".
func shell(script string, n int) (up, down time.Duration) {
	out, err := exec.Command("bash", script, strconv.Itoa(n)).CombinedOutput()
	if err != nil {
		check(fmt.Errorf("%s %d: %v\n%s", script, n, err, out))
	}
	for _, f := range strings.Fields(string(out)) {
		k, v, _ := strings.Cut(f, "=")
		s, _ := strconv.ParseFloat(v, 64)
		d := time.Duration(s * 1e9)
		switch k {
		case "setup_s":
			up = d
		case "teardown_s":
			down = d
		}
	}
	return up, down
}

func prefix(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i / 250), byte(i % 250), 0}), 24)
}

type made struct {
	name string
	ns   *netns.Handle
	l    *nat.Link
}

// dualStack (-ipv6) gives every link an IPv6 prefix too (see prefix6).
var dualStack bool

// prefix6 is the IPv6 prefix of the link with IPv4 prefix p:
// fd00:B:C::/64 for 10.B.C.0/24.
func prefix6(p netip.Prefix) netip.Prefix {
	a := p.Addr().As4()
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, a[1], 0, a[2]}), 64)
}

// newConnected sets up one namespace as a user writes it: netns.New, then
// Connect through the world's uplink in cfg.HostNS (dual stack with -ipv6).
func newConnected(cfg nat.Config, name string, p netip.Prefix) made {
	if dualStack {
		cfg.Prefix6 = prefix6(p)
	}
	ns, err := netns.New(name)
	check(err)
	l, err := cfg.Connect(ns, "up0", p) // every world's uplink
	check(err)
	return made{name, ns, l}
}

// tearDown is newConnected's counterpart: Close, then netns.Delete.
func (m made) tearDown() {
	check(m.l.Close())
	if m.ns != nil {
		m.ns.Close()
	}
	check(netns.Delete(m.name))
}

// dropHandle closes the bench's handle to the namespace (the link keeps
// its own; the name stays for netns.Delete).
func (m *made) dropHandle() {
	m.ns.Close()
	m.ns = nil
}

// library sets up n namespaces as a user would (netns.New + nat.Connect,
// by `workers` goroutines) and tears them down (Close + Delete each, or
// CloseAll + Delete each with bulk).
func library(n int, bulk bool, workers int) (up, down time.Duration) {
	all := make([]made, n)
	t0 := time.Now()
	var wg sync.WaitGroup
	next := make(chan int, n)
	for i := range n {
		next <- i + 1
	}
	close(next)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				all[i-1] = newConnected(nat.Config{}, fmt.Sprintf("ex-ns%d", i), prefix(i))
			}
		}()
	}
	wg.Wait()
	up = time.Since(t0)
	t0 = time.Now()
	if bulk {
		closeAll(all)
	} else {
		for _, m := range all {
			m.tearDown()
		}
	}
	return up, time.Since(t0)
}

// closeAll is the bulk tear-down: nat.CloseAll, then the namespaces.
func closeAll(all []made) {
	links := make([]*nat.Link, len(all))
	for i, m := range all {
		links[i] = m.l
	}
	check(nat.CloseAll(links...))
	for _, m := range all {
		m.ns.Close()
		check(netns.Delete(m.name))
	}
}

// publishedPorts measures what n published ports cost against 1: the
// rule count, the throughput of a TCP stream from the outside host to a
// published port (alternating rounds, medians) and the time to publish
// one more port with 10 and with n present (medians of 21).
func publishedPorts(w *nstest.World, n int) {
	ns, err := netns.NewAnonymous()
	check(err)
	defer ns.Close()
	l, err := nat.Connect(ns, w.Uplink, prefix(1))
	check(err)
	defer l.Close()
	check(l.Publish(nat.Port{Protocol: "tcp", HostPort: 8080, NSPort: 5201}))
	var srv net.Listener
	check(ns.Do(func() (err error) { srv, err = net.Listen("tcp", ":5201"); return err }))
	defer srv.Close()
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	stream := func() float64 {
		const size = 256 << 20
		var c net.Conn
		check(w.Inet.Do(func() (err error) { c, err = net.Dial("tcp", w.UplinkAddr.Addr().String()+":8080"); return err }))
		buf := make([]byte, 1<<20)
		t0 := time.Now()
		for sent := 0; sent < size; sent += len(buf) {
			_, err := c.Write(buf)
			check(err)
		}
		c.Close()
		return size / 1e6 / time.Since(t0).Seconds()
	}
	many := func(from, count int) []nat.Port {
		var ps []nat.Port
		for i := range count {
			ps = append(ps, nat.Port{Protocol: "udp", HostPort: uint16(20000 + from + i)})
		}
		return ps
	}
	publishOne := func(present int) float64 {
		var ts []float64
		for i := range 21 {
			p := nat.Port{Protocol: "tcp", HostPort: uint16(9000 + i)}
			t0 := time.Now()
			check(l.Publish(p))
			ts = append(ts, ms(time.Since(t0)))
			check(l.Unpublish(p))
		}
		return median(ts)
	}
	rulesOne := countRules()
	check(l.Publish(many(0, 9)...))
	pubFew := publishOne(10)
	check(l.Unpublish(many(0, 9)...))
	var one, lots []float64
	for range 5 {
		one = append(one, stream())
		check(l.Publish(many(0, n-1)...))
		lots = append(lots, stream())
		check(l.Unpublish(many(0, n-1)...))
	}
	check(l.Publish(many(0, n-1)...))
	rulesMany := countRules()
	pubMany := publishOne(n)
	check(l.Unpublish(many(0, n-1)...))
	fmt.Printf("published ports: nftables rules / base chains %v with 1, %v with %d\n", rulesOne, rulesMany, n)
	fmt.Printf("TCP stream from the outside host to a published port: %.0f MB/s with 1, %.0f MB/s with %d (medians of 5 alternating, %.2f×)\n",
		median(one), median(lots), n, median(lots)/median(one))
	fmt.Printf("publishing one more port: %.3f ms with 10 present, %.3f ms with %d (medians of 21, %.2f×)\n",
		pubFew, pubMany, n, pubMany/pubFew)
}

// teardown prints one row of tear-down figures for n namespaces (see
// main), beside the shell's, in one run.
func teardown(script string, n int) {
	_, shDown := shell(script, n)
	settle()
	baseline := hostLinks()
	setUp := func() []made {
		all := make([]made, n)
		for i := range all {
			all[i] = newConnected(nat.Config{}, fmt.Sprintf("ex-ns%d", i+1), prefix(i+1))
		}
		return all
	}
	all := setUp()
	var alone []float64
	for _, m := range all {
		t0 := time.Now()
		check(m.l.Close())
		alone = append(alone, ms(time.Since(t0)))
	}
	for _, m := range all {
		m.ns.Close()
		check(netns.Delete(m.name))
	}
	settle()
	all = setUp()
	settle()
	start := time.Now()
	var both []float64
	for _, m := range all {
		t0 := time.Now()
		m.tearDown()
		both = append(both, ms(time.Since(t0)))
	}
	for hostLinks() > baseline || hostRoutes() > 0 {
		time.Sleep(200 * time.Microsecond)
	}
	done := time.Since(start)
	fmt.Printf("| %d | %.2f ms | %.2f ms | %.2f ms | %.1f× | %.2f ms |\n", n, ms(shDown)/float64(n), median(alone), median(both),
		ms(shDown)/float64(n)/median(both), ms(done)/float64(n))
	settle()
}

// hostLinks counts the links of the current namespace.
func hostLinks() int {
	ls, err := veth.List(nil)
	check(err)
	return len(ls)
}

// hostRoutes counts the routes of the current namespace's main table to
// the namespaces' prefixes (10.0.0.0/8).
func hostRoutes() int {
	rs, err := route.List(nil, &route.Filter{Family: 4})
	check(err)
	n := 0
	for _, r := range rs {
		if netip.MustParsePrefix("10.0.0.0/8").Overlaps(r.Dst) {
			n++
		}
	}
	return n
}

// scaling checks the targets that need many namespaces.
func scaling(w *nstest.World, n int) {
	// The cost per namespace of setting up 10, then of setting up n, in the
	// same run. Set-up times of single namespaces are noisy on a shared
	// machine, so the marginal cost (first namespaces against the last
	// ones) is compared with medians.
	small, _ := setUpTimes(w, 10)
	settle()
	times, rulesAt := setUpTimes(w, n)
	window := min(50, n/4)
	fmt.Printf("set-up per namespace: %.2f ms with %d, %.2f ms with 10, ratio %.2f\n",
		mean(times), n, mean(small), mean(times)/mean(small))
	// The first Connect makes the table and the caches: leave it out.
	early, late := median(times[1:window+1]), median(times[n-window:])
	fmt.Printf("marginal set-up (medians): namespaces 2-%d %.2f ms, last %d %.2f ms, ratio %.2f\n",
		window+1, early, window, late, late/early)
	fmt.Printf("nftables rules / base chains: %v with 1 link, %v with %d\n", rulesAt[0], rulesAt[1], n)
	settle()
	interleaved(n, 50)

	// Resources over n Connect/Close cycles, after a warm-up that lets the
	// Go runtime make the threads it keeps.
	ns, err := netns.NewAnonymous()
	check(err)
	defer ns.Close()
	cycle := func() {
		l, err := nat.Connect(ns, w.Uplink, prefix(1))
		check(err)
		check(l.Close())
	}
	for range 20 {
		cycle()
	}
	runtime.GC()
	fds0, thr0, gor0, rss0 := resources()
	for range n {
		cycle()
	}
	runtime.GC()
	time.Sleep(100 * time.Millisecond)
	fds1, thr1, gor1, rss1 := resources()
	fmt.Printf("after %d Connect/Close cycles: fds %d -> %d, threads %d -> %d, goroutines %d -> %d, RSS %.1f -> %.1f MiB\n",
		n, fds0, fds1, thr0, thr1, gor0, gor1, rss0, rss1)
}

// interleaved measures the same things in two host namespaces that exist
// side by side, one with few links and one with n, taking turns, so that
// the machine's changing load (other tenants, the kernel's background
// work) falls on both alike and the ratios show what the number of links
// costs. Each round sets up and tears down one probe namespace in each
// host (the time of New + Connect is kept), then streams to each host's
// own outside namespace through one of its links.
func interleaved(n, rounds int) {
	a, err := nstest.BuildWorld("few-host", "few-inet")
	check(err)
	defer a.Close()
	b, err := nstest.BuildWorld("many-host", "many-inet")
	check(err)
	defer b.Close()
	fill := func(w *nstest.World, tag string, from, to int) []made {
		var all []made
		for i := from; i <= to; i++ {
			m := newConnected(nat.Config{HostNS: w.Host}, fmt.Sprintf("%s-ns%d", tag, i), prefix(i))
			if i > 1 {
				m.dropHandle()
			}
			all = append(all, m)
		}
		return all
	}
	// probe sets up one more namespace, timing netns.New and Connect apart
	// (the kernel's cost of a namespace and its bind mount grows with
	// their number, which is not the library's).
	var newFew, newMany []float64
	probe := func(w *nstest.World, tag string) float64 {
		t0 := time.Now()
		ns, err := netns.New(tag + "-probe")
		check(err)
		t1 := time.Now()
		l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix("10.200.0.0/24"))
		check(err)
		d := ms(time.Since(t1))
		if tag == "few" {
			newFew = append(newFew, ms(t1.Sub(t0)))
		} else {
			newMany = append(newMany, ms(t1.Sub(t0)))
		}
		made{tag + "-probe", ns, l}.tearDown()
		return d
	}
	few := fill(a, "few", 1, 1)
	many := fill(b, "many", 1, n)
	var thFew, thMany []float64
	for range 7 {
		thFew = append(thFew, throughput(a, few[0].ns, 1))
		thMany = append(thMany, throughput(b, many[0].ns, 1))
	}
	few = append(few, fill(a, "few", 2, 10)...)
	var tFew, tMany []float64
	var cFew, cMany []steps
	for range rounds {
		tFew = append(tFew, probe(a, "few"))
		tMany = append(tMany, probe(b, "many"))
		cFew = append(cFew, commandProbe(a.Host, "few"))
		cMany = append(cMany, commandProbe(b.Host, "many"))
	}
	fmt.Printf("interleaved, %d rounds: Connect of one more namespace (median) %.2f ms with %d links, %.2f ms with %d, ratio %.2f, growth %+.2f ms\n",
		rounds, median(tFew), len(few), median(tMany), len(many), median(tMany)/median(tFew), median(tMany)-median(tFew))
	for _, c := range []struct {
		what string
		of   func(steps) float64
	}{
		{"veth.Create (ip link add, peer in the namespace)", func(s steps) float64 { return s.create }},
		{"veth.SetUp (ip link set up)", func(s steps) float64 { return s.up }},
		{"addr.Add (ip address add)", func(s steps) float64 { return s.address }},
		{"route.Add twice (no address: a local route and a prefix route, an unnumbered host end's way; two requests)", func(s steps) float64 { return s.routes }},
	} {
		f, m := medianOf(cFew, c.of), medianOf(cMany, c.of)
		fmt.Printf("interleaved, %d rounds: the tutorial's host-end command %s, one request (median) %.3f ms with %d links, %.3f ms with %d, ratio %.2f, growth %+.3f ms\n",
			rounds, c.what, f, len(few), m, len(many), m/f, m-f)
	}
	fmt.Printf("interleaved, %d rounds: netns.New of it (median) %.2f ms with %d namespaces, %.2f ms with %d, ratio %.2f\n",
		rounds, median(newFew), len(few), median(newMany), len(many), median(newMany)/median(newFew))
	fmt.Printf("interleaved, 7 rounds: throughput (median) %.0f MB/s with 1 link, %.0f MB/s with %d, ratio %.2f\n",
		median(thFew), median(thMany), len(many), median(thMany)/median(thFew))
	closeAll(few)
	closeAll(many)
}

// medianOf is the median of one field of steps.
func medianOf(all []steps, of func(steps) float64) float64 {
	var v []float64
	for _, s := range all {
		v = append(v, of(s))
	}
	return median(v)
}

// setUpTimes sets up n namespaces (netns.New + nat.Connect each) and returns
// each one's time, and the library's rules and base chains with 1 and with
// n links. The throughput of the first namespace to the outside host is
// measured with 1 and with n connected. Everything is torn down before it
// returns.
func setUpTimes(w *nstest.World, n int) (times []float64, rules [2][2]int) {
	var all []made
	for i := 1; i <= n; i++ {
		t0 := time.Now()
		m := newConnected(nat.Config{}, fmt.Sprintf("sc-ns%d", i), prefix(i))
		times = append(times, ms(time.Since(t0)))
		if i > 1 {
			m.dropHandle() // (a descriptor each: 10,000 would not fit)
		}
		all = append(all, m)
		if i == 1 {
			rules[0] = countRules()
			if n > 10 {
				fmt.Printf("throughput, 1 link:     %.0f MB/s\n", throughput(w, m.ns, 3))
			}
		}
	}
	rules[1] = countRules()
	if n > 10 {
		fmt.Printf("throughput, %d links: %.0f MB/s\n", n, throughput(w, all[0].ns, 3))
	}
	t0 := time.Now()
	closeAll(all)
	if n > 10 {
		fmt.Printf("CloseAll + Delete of %d: %.3f s\n", n, time.Since(t0).Seconds())
	}
	return times, rules
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func countRules() [2]int {
	c, err := nftables.New()
	check(err)
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: nat.TableName}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	check(err)
	var rules, base int
	for _, ch := range chains {
		if ch.Table.Name != nat.TableName {
			continue
		}
		if ch.Hooknum != nil {
			base++
		}
		rs, err := c.GetRules(t, ch)
		check(err)
		rules += len(rs)
	}
	return [2]int{rules, base}
}

// throughput sends 256 MiB over TCP from inside ns to the outside host
// through the NAT, best of three, in MB/s.
func throughput(w *nstest.World, ns *netns.Handle, streams int) float64 {
	const size = 256 << 20
	var l net.Listener
	check(w.Inet.Do(func() (err error) { l, err = net.Listen("tcp", w.Outside.String()+":5201"); return err }))
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	best := 0.0
	buf := make([]byte, 1<<20)
	for range streams {
		var c net.Conn
		check(ns.Do(func() (err error) { c, err = net.Dial("tcp", w.Outside.String()+":5201"); return err }))
		t0 := time.Now()
		for sent := 0; sent < size; sent += len(buf) {
			_, err := c.Write(buf)
			check(err)
		}
		c.Close()
		if mbs := size / 1e6 / time.Since(t0).Seconds(); mbs > best {
			best = mbs
		}
	}
	return best
}

func resources() (fds, threads, goroutines int, rssMiB float64) {
	ents, _ := os.ReadDir("/proc/self/fd")
	tasks, _ := os.ReadDir("/proc/self/task")
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			rssMiB = float64(kb) / 1024
		}
	}
	return len(ents), len(tasks), runtime.NumGoroutine(), rssMiB
}

// raiseFileLimit raises the process's open file limit to at least n (each
// Link holds two descriptors: its handles to the host and to its
// namespace; the bench holds one more per namespace), up to what the
// kernel allows (fs.nr_open); raising the hard limit needs
// CAP_SYS_RESOURCE, which the bench has as root.
func raiseFileLimit(n int) {
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) != nil || lim.Cur >= uint64(n) {
		return
	}
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if max, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > max {
			n = max
		}
	}
	want := unix.Rlimit{Cur: uint64(n), Max: max(lim.Max, uint64(n))}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err != nil {
		fmt.Fprintf(os.Stderr, "bench: open file limit %d: %v\n", lim.Cur, err)
	}
}
