package nat_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// TestAutoPrefix: a zero cidr takes a free prefix of the pool: three links
// of a pool of four /24s get three distinct ones, never the one a host
// route holds; the next Connect fails with ErrPoolExhausted naming the
// pool; a closed link's prefix is taken again; another process's links
// are skipped (claims, across processes) while it lives; the default pool
// is 10.200.0.0/13; traffic flows on a chosen prefix.
func TestAutoPrefix(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "auto-")
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	nstest.Cmd(t, "ip", "-n", w.HostName, "route", "add", "10.9.1.0/24", "dev", "up0")
	cfg := nat.Config{HostNS: w.Host, Pool: netip.MustParsePrefix("10.9.0.0/22")}
	var links []*nat.Link
	seen := map[netip.Prefix]bool{}
	ns1 := nstest.NewNS(t, "auto-1")
	for i, name := range []string{"auto-1", "auto-2", "auto-3"} {
		ns := ns1
		if i > 0 {
			ns = nstest.NewNS(t, name)
		}
		l, err := cfg.Connect(ns, "up0", netip.Prefix{})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		links = append(links, l)
		switch p := l.Prefix; {
		case seen[p], p.Bits() != 24, !cfg.Pool.Overlaps(p), p == netip.MustParsePrefix("10.9.1.0/24"):
			t.Errorf("%s got %v (taken: %v)", name, p, seen)
		default:
			seen[p] = true
		}
	}
	if from, err := nstest.Echo(nstest.NewNS(t, "auto-probe"), "203.0.113.1:8080"); err == nil {
		t.Errorf("control: an unconnected namespace reached the outside (%s)", from)
	}
	if from, err := nstest.Echo(ns1, "203.0.113.1:8080"); err != nil || from != "203.0.113.2" {
		t.Errorf("traffic on the chosen %v: %q %v", links[0].Prefix, from, err)
	}
	_, err := cfg.Connect(nstest.NewNS(t, "auto-4"), "up0", netip.Prefix{})
	if !errors.Is(err, nat.ErrPoolExhausted) || !strings.Contains(err.Error(), "10.9.0.0/22") {
		t.Errorf("a fourth link: %v, want ErrPoolExhausted naming 10.9.0.0/22", err)
	}
	freed := links[1].Prefix
	if err := links[1].Close(); err != nil {
		t.Fatal(err)
	}
	l, err := cfg.Connect(nstest.NewNS(t, "auto-5"), "up0", netip.Prefix{})
	if err != nil || l.Prefix != freed {
		t.Errorf("after a Close: %v %v, want the freed %v", l, err, freed)
	}
	if err == nil {
		l.Close()
	}

	// Another process, alive: its link holds one of a pool of two, so this
	// process gets the other, whichever it tried first, and then none.
	liveChild(t, w, "auto-child", "", "", "NSNET_HELPER_POOL=10.9.8.0/23")
	pool2 := nat.Config{HostNS: w.Host, Pool: netip.MustParsePrefix("10.9.8.0/23")}
	l, err = pool2.Connect(nstest.NewNS(t, "auto-6"), "up0", netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := pool2.Connect(nstest.NewNS(t, "auto-8"), "up0", netip.Prefix{}); !errors.Is(err, nat.ErrPoolExhausted) {
		t.Errorf("with the other process's link and one of this one's, a pool of two: %v, want ErrPoolExhausted", err)
	}

	def, err := nat.Config{HostNS: w.Host}.Connect(nstest.NewNS(t, "auto-7"), "up0", netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	defer def.Close()
	if !nat.DefaultPool.Overlaps(def.Prefix) || def.Prefix.Bits() != 24 {
		t.Errorf("default pool: got %v", def.Prefix)
	}
}

// TestAutoPrefix6: Config.AutoPrefix6 gives each link a distinct /64 of
// one unique local /48 (fd00::/8), the same /48 for another process in
// the host namespace; IPv6 traffic flows on it, masqueraded; with a
// given IPv4 prefix that overlaps, Connect fails with that overlap after a
// few tries, not after the pool.
func TestAutoPrefix6(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "auto6-")
	dst := serve6(t, w)
	cfg := nat.Config{HostNS: w.Host, AutoPrefix6: true}
	a, b := nstest.NewNS(t, "auto6-a"), nstest.NewNS(t, "auto6-b")
	la, err := cfg.Connect(a, "up0", netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()
	lb, err := cfg.Connect(b, "up0", netip.MustParsePrefix("10.9.20.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	p48 := netip.PrefixFrom(la.Prefix6.Addr(), 48).Masked()
	switch {
	case la.Prefix6.Bits() != 64 || lb.Prefix6.Bits() != 64 || la.Prefix6 == lb.Prefix6:
		t.Errorf("prefixes %v and %v: want two distinct /64s", la.Prefix6, lb.Prefix6)
	case !netip.MustParsePrefix("fd00::/8").Overlaps(p48) || !p48.Overlaps(lb.Prefix6):
		t.Errorf("%v and %v are not of one fd00::/8 /48", la.Prefix6, lb.Prefix6)
	case !la.Prefix.IsValid() || lb.Prefix != netip.MustParsePrefix("10.9.20.0/24"):
		t.Errorf("IPv4: %v and %v", la.Prefix, lb.Prefix)
	}
	if seen, err := nstest.Echo(a, dst); err != nil || seen != "2001:db8::2" {
		t.Errorf("TCP over IPv6 on %v: %q %v", la.Prefix6, seen, err)
	}
	// Another process finds the same /48.
	liveChild(t, w, "auto6-child", "10.9.21.0/24", "", "NSNET_HELPER_AUTO6=1")
	addrs := nstest.Cmd(t, "ip", "-n", "auto6-child", "-6", "addr", "show", "dev", "eth0", "scope", "global")
	if !strings.Contains(addrs, strings.TrimSuffix(p48.Addr().String(), "::")+":") {
		t.Errorf("the other process's link is not in %v:\n%s", p48, addrs)
	}
	// IPv6 only (AutoIPv6): a /64 of the same /48, no IPv4.
	c := nstest.NewNS(t, "auto6-v6only")
	lc, err := nat.Config{HostNS: w.Host}.Connect(c, "up0", nat.AutoIPv6)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	if lc.Prefix.IsValid() || lc.Prefix6.Bits() != 64 || !p48.Overlaps(lc.Prefix6) || lc.Prefix6 == la.Prefix6 || lc.Prefix6 == lb.Prefix6 {
		t.Errorf("AutoIPv6: %v and %v, want no IPv4 and a new /64 of %v", lc.Prefix, lc.Prefix6, p48)
	}
	if seen, err := nstest.Echo(c, dst); err != nil || seen != "2001:db8::2" {
		t.Errorf("TCP over IPv6 on an IPv6-only automatic link: %q %v", seen, err)
	}
	if _, err := (nat.Config{HostNS: w.Host, Prefix6: netip.MustParsePrefix("fd00:9::/64")}).Connect(nstest.NewNS(t, "auto6-d"), "up0", nat.AutoIPv6); !errors.Is(err, nat.ErrInvalidConfig) {
		t.Errorf("AutoIPv6 with Prefix6: %v, want ErrInvalidConfig", err)
	}
	// A given IPv4 prefix that overlaps: that error, soon.
	_, err = cfg.Connect(nstest.NewNS(t, "auto6-c"), "up0", netip.MustParsePrefix("10.9.20.0/24"))
	if !errors.Is(err, nat.ErrOverlap) || errors.Is(err, nat.ErrPoolExhausted) {
		t.Errorf("an overlapping IPv4 prefix with AutoPrefix6: %v, want ErrOverlap", err)
	}
}

// TestHelperAutoMany is the body of TestAutoPrefixProcesses's helpers:
// NSNET_HELPER_N links with automatic prefixes, each printed, then "done";
// they are closed when standard input ends.
func TestHelperAutoMany(t *testing.T) {
	if os.Getenv("NSNET_HELPER") != "automany" {
		return
	}
	host, err := netns.Open(os.Getenv("NSNET_HELPER_HOST"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(os.Getenv("NSNET_HELPER_N"))
	var links []*nat.Link
	for range n {
		ns, err := netns.NewAnonymous()
		if err != nil {
			t.Fatal(err)
		}
		l, err := nat.Config{HostNS: host, DNS: nat.DNSNone}.Connect(ns, "up0", netip.Prefix{})
		ns.Close()
		if err != nil {
			t.Fatal(err)
		}
		links = append(links, l)
		fmt.Println("prefix", l.Prefix)
	}
	fmt.Println("done")
	io.Copy(io.Discard, os.Stdin)
	if err := nat.CloseAll(links...); err != nil {
		t.Fatal(err)
	}
}

// TestAutoPrefixProcesses: four processes make 250 links each with
// automatic prefixes at once: 1,000 distinct prefixes of the default pool,
// none in the part of it a host route holds; after they close, the host
// reads as before.
func TestAutoPrefixProcesses(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "autop-")
	nstest.Cmd(t, "ip", "-n", w.HostName, "route", "add", "10.201.0.0/16", "dev", "up0")
	before := state(t, w)
	const procs, each = 4, 250
	type result struct {
		prefixes []netip.Prefix
		err      error
	}
	results := make(chan result, procs)
	var stdins []io.WriteCloser
	var cmds []*exec.Cmd
	for range procs {
		cmd := nstest.Child("TestHelperAutoMany", "NSNET_HELPER=automany", "NSNET_HELPER_HOST="+w.HostName,
			fmt.Sprintf("NSNET_HELPER_N=%d", each))
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		stdins, cmds = append(stdins, in), append(cmds, cmd)
		go func() {
			var r result
			s := bufio.NewScanner(out)
			for s.Scan() {
				line := s.Text()
				if line == "done" {
					results <- r
					return
				}
				if v, ok := strings.CutPrefix(line, "prefix "); ok {
					p, err := netip.ParsePrefix(v)
					r.prefixes, r.err = append(r.prefixes, p), errors.Join(r.err, err)
				}
			}
			r.err = errors.Join(r.err, fmt.Errorf("helper ended after %d links", len(r.prefixes)))
			results <- r
		}()
	}
	seen := map[netip.Prefix]bool{}
	held := netip.MustParsePrefix("10.201.0.0/16")
	for range procs {
		r := <-results
		if r.err != nil {
			t.Error(r.err)
		}
		for _, p := range r.prefixes {
			switch {
			case seen[p]:
				t.Errorf("%v given twice", p)
			case !nat.DefaultPool.Overlaps(p) || held.Overlaps(p) || p.Bits() != 24:
				t.Errorf("%v: outside the default pool, in the host route's %v, or not a /24", p, held)
			}
			seen[p] = true
		}
	}
	if len(seen) != procs*each {
		t.Errorf("%d distinct prefixes, want %d", len(seen), procs*each)
	}
	for i, in := range stdins {
		in.Close()
		if err := cmds[i].Wait(); err != nil {
			t.Errorf("helper %d: %v", i, err)
		}
	}
	sameState(t, w, before, "after the four processes closed")
}
