// Command bench measures nsnet against the tutorial's own shell commands
// (seed-shell.sh beside this file: ip + iptables, N namespaces behind one
// uplink), side by side in one run, and prints the ratios. Everything runs
// in private network and mount namespaces made for the run.
//
//	sudo go run ./bench                  # N = 1, 10, 200
//	sudo go run ./bench -n 1,50 -runs 3  # chosen N, best of 3
//	sudo go run ./bench -scale 1000      # scaling, rules, throughput, resources
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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/nsnet/nsnet/internal/private"
	"github.com/nsnet/nsnet/internal/world"
	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
)

const envPrivate = "NSNET_BENCH_PRIVATE"

func main() {
	ns := flag.String("n", "1,10,200", "comma-separated numbers of namespaces")
	runs := flag.Int("runs", 1, "runs per N; the best is kept")
	scale := flag.Int("scale", 0, "run the scaling checks with this many namespaces instead")
	script := flag.String("shell", "", "the shell baseline (default: seed-shell.sh next to this program's source)")
	flag.Parse()
	if !private.Inside(envPrivate) {
		if os.Geteuid() != 0 {
			fmt.Fprintln(os.Stderr, "bench needs root")
			os.Exit(1)
		}
		code, err := private.Rerun(envPrivate)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(code)
	}
	check(private.SetUp())
	w, err := world.New("", "inet")
	check(err)
	defer w.Close()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Printf("# %s, kernel %s, %d CPUs, %s\n", time.Now().UTC().Format("2006-01-02"), strings.TrimSpace(string(kernel)), runtime.NumCPU(), runtime.Version())
	if *scale > 0 {
		scaling(w, *scale)
		return
	}
	if *script == "" {
		*script = findScript()
	}
	fmt.Println("| N | shell set-up | nsnet set-up | ratio | shell tear-down | nsnet Close+Delete | ratio | nsnet CloseAll+Delete | ratio | nsnet parallel set-up |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, f := range strings.Split(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		check(err)
		var best [6]time.Duration
		for r := 0; r < *runs; r++ {
			shUp, shDown := shell(*script, n)
			libUp, libDown := library(w, n, false, 1)
			_, bulkDown := library(w, n, true, 1)
			parUp, _ := library(w, n, true, runtime.NumCPU())
			for i, d := range []time.Duration{shUp, shDown, libUp, libDown, bulkDown, parUp} {
				if r == 0 || d < best[i] {
					best[i] = d
				}
			}
		}
		per := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(n)/1e6) }
		ratio := func(a, b time.Duration) string { return fmt.Sprintf("%.1f×", float64(a)/float64(b)) }
		fmt.Printf("| %d | %s | %s | %s | %s | %s | %s | %.3f s total | %s | %s |\n", n,
			per(best[0]), per(best[2]), ratio(best[0], best[2]),
			per(best[1]), per(best[3]), ratio(best[1], best[3]),
			best[4].Seconds(), ratio(best[1], best[4]), per(best[5]))
	}
	fmt.Println("\nper namespace: set-up is netns.New + nat.Connect; tear-down is Link.Close + netns.Delete;")
	fmt.Println("CloseAll is nat.CloseAll(all) + netns.Delete each; parallel set-up uses", runtime.NumCPU(), "goroutines.")
}

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

// library sets up n namespaces as a user would (netns.New + nat.Connect,
// by `workers` goroutines) and tears them down (Close + Delete each, or
// CloseAll + Delete each with bulk).
func library(w *world.World, n int, bulk bool, workers int) (up, down time.Duration) {
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
				name := fmt.Sprintf("ex-ns%d", i)
				ns, err := netns.New(name)
				check(err)
				l, err := nat.Connect(ns, world.Uplink, prefix(i))
				check(err)
				all[i-1] = made{name, ns, l}
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
			check(m.l.Close())
			m.ns.Close()
			check(netns.Delete(m.name))
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

// scaling checks the targets that need many namespaces.
func scaling(w *world.World, n int) {
	// Rules and base chains with 1 and with n links.
	rulesAt := map[int][2]int{}
	var all []made
	var first, last, total time.Duration
	window := min(50, n/4)
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("sc-ns%d", i)
		t0 := time.Now()
		ns, err := netns.New(name)
		check(err)
		l, err := nat.Connect(ns, world.Uplink, prefix(i))
		check(err)
		d := time.Since(t0)
		total += d
		// The first Connect makes the table and the caches: leave it out.
		if i > 1 && i <= window+1 {
			first += d
		}
		if i > n-window {
			last += d
		}
		all = append(all, made{name, ns, l})
		if i == 1 || i == n {
			rulesAt[i] = countRules()
			if i == 1 {
				fmt.Printf("throughput, 1 link:     %s\n", throughput(w, ns))
			}
		}
	}
	fmt.Printf("throughput, %d links: %s\n", n, throughput(w, all[0].ns))
	fmt.Printf("set-up per namespace: namespaces 2-%d %.2f ms, last %d %.2f ms, ratio %.2f; average of all %d %.2f ms\n",
		window+1, ms(first)/float64(window), window, ms(last)/float64(window), float64(last)/float64(first), n, ms(total)/float64(n))
	fmt.Printf("nftables rules / base chains: %v with 1 link, %v with %d\n", rulesAt[1], rulesAt[n], n)
	t0 := time.Now()
	closeAll(all)
	fmt.Printf("CloseAll + Delete of %d: %.3f s\n", n, time.Since(t0).Seconds())

	// Resources over n Connect/Close cycles.
	ns, err := netns.NewAnonymous()
	check(err)
	defer ns.Close()
	cycle := func() {
		l, err := nat.Connect(ns, world.Uplink, prefix(1))
		check(err)
		check(l.Close())
	}
	cycle()
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

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func countRules() [2]int {
	c, err := nftables.New()
	check(err)
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: nat.TableName}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
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
func throughput(w *world.World, ns *netns.Handle) string {
	const size = 256 << 20
	var l net.Listener
	check(w.Inet.Do(func() (err error) { l, err = net.Listen("tcp", world.Outside.String()+":5201"); return err }))
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
	for range 3 {
		var c net.Conn
		check(ns.Do(func() (err error) { c, err = net.Dial("tcp", world.Outside.String()+":5201"); return err }))
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
	return fmt.Sprintf("%.0f MB/s", best)
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
