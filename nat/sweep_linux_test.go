package nat_test

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// TestHelperConnect is not a test: it is the body of the child processes
// that TestSweep* start and kill. It connects NSNET_HELPER_NS through
// NSNET_HELPER_HOST's up0, says so on stdout, and waits to be killed;
// with NSNET_HELPER_STEP it stops in the middle, before that step.
func TestHelperConnect(t *testing.T) {
	if os.Getenv("NSNET_HELPER") != "connect" {
		return // only a body for helper processes, as os/exec's TestHelperProcess
	}
	host, err := netns.Open(os.Getenv("NSNET_HELPER_HOST"))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.Open(os.Getenv("NSNET_HELPER_NS"))
	if err != nil {
		t.Fatal(err)
	}
	if step := os.Getenv("NSNET_HELPER_STEP"); step != "" {
		nat.SetFailHook(func(s string) error {
			if s == step {
				fmt.Println("blocked")
				select {} // killed here
			}
			return nil
		})
	}
	cfg := nat.Config{HostNS: host, DockerUser: os.Getenv("NSNET_HELPER_DOCKERUSER") != ""}
	if tag := os.Getenv("NSNET_HELPER_PERSISTENT"); tag != "" {
		cfg.Persistent, cfg.Tag, cfg.HostVeth = true, tag, os.Getenv("NSNET_HELPER_VETH")
	}
	if p6 := os.Getenv("NSNET_HELPER_PREFIX6"); p6 != "" {
		cfg.Prefix6 = netip.MustParsePrefix(p6)
	}
	if port, err := strconv.Atoi(os.Getenv("NSNET_HELPER_PORT")); err == nil {
		cfg.Ports = []nat.Port{{Protocol: "tcp", HostPort: uint16(port)}}
	}
	var prefix netip.Prefix // (none: one of the pool, NSNET_HELPER_POOL)
	if v := os.Getenv("NSNET_HELPER_PREFIX"); v != "" {
		prefix = netip.MustParsePrefix(v)
	}
	if v := os.Getenv("NSNET_HELPER_POOL"); v != "" {
		cfg.Pool = netip.MustParsePrefix(v)
	}
	cfg.AutoPrefix6 = os.Getenv("NSNET_HELPER_AUTO6") != ""
	if os.Getenv("NSNET_HELPER_DNS") != "" {
		cfg.DNS, cfg.DNSServers = nat.DNSServers, []netip.Addr{netip.MustParseAddr("203.0.113.1")}
	}
	nat.SetNoTmpfile(os.Getenv("NSNET_HELPER_NO_TMPFILE") != "")
	l, err := cfg.Connect(ns, "up0", prefix)
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("NSNET_HELPER_CLOSE") != "" {
		// Killed the moment Close returned.
		l.Close()
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	fmt.Println("connected")
	select {}
}

// killedChild starts a helper that connects nsName (see liveChild) and
// kills it (SIGKILL) once it printed want ("connected", or "blocked" with
// step set).
func killedChild(t *testing.T, w *nstest.World, nsName, prefix, step string, env ...string) {
	t.Helper()
	cmd := liveChild(t, w, nsName, prefix, step, env...)
	cmd.Process.Kill()
	cmd.Wait()
}

// liveChild starts a helper process that connects the new namespace
// nsName with prefix ("" for one of the pool) and returns it, alive, once
// it printed "connected" ("blocked" with step set: held at that step); it
// is killed when t ends. env adds to the helper's environment
// (NSNET_HELPER_DOCKERUSER=1: with Config.DockerUser;
// NSNET_HELPER_PREFIX6=P: with Config.Prefix6; NSNET_HELPER_POOL=P: with
// Config.Pool; NSNET_HELPER_AUTO6=1: with Config.AutoPrefix6;
// NSNET_HELPER_DNS=1: DNSServers 203.0.113.1; NSNET_HELPER_NO_TMPFILE=1:
// resolv.conf written through a named temporary file).
func liveChild(t *testing.T, w *nstest.World, nsName, prefix, step string, env ...string) *exec.Cmd {
	t.Helper()
	nstest.NewNS(t, nsName)
	cmd := nstest.Child("TestHelperConnect", append([]string{"NSNET_HELPER=connect", "NSNET_HELPER_HOST=" + w.HostName,
		"NSNET_HELPER_NS=" + nsName, "NSNET_HELPER_PREFIX=" + prefix, "NSNET_HELPER_STEP=" + step}, env...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() }) // (also when it fails to report)
	want := "connected"
	if step != "" {
		want = "blocked"
	}
	got := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			if strings.TrimSpace(s.Text()) == want {
				got <- want
				return
			}
		}
		got <- "eof"
	}()
	select {
	case g := <-got:
		if g != want {
			t.Fatalf("helper said %q, want %q", g, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("helper did not report")
	}
	return cmd
}

// TestSweepDeadOwner: a process killed after Connect leaves its link,
// rules and forwarding; Sweep removes them all, and the host reads as
// before, forwarding back off and the table gone.
func TestSweepDeadOwner(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "swd-")
	before := state(t, w)
	killedChild(t, w, "swd-ns1", "10.5.1.0/24", "")
	if state(t, w) == before {
		t.Fatal("the killed helper left nothing: the test proves nothing")
	}
	res, err := nat.Sweep(w.Host)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Links) != 1 || res.Elements != 8 || len(res.Uplinks) != 1 || !res.Table {
		t.Errorf("Sweep = %+v", res)
	}
	sameState(t, w, before, "state after Sweep")
}

// TestKilledRightAfterClose: a process killed (SIGKILL) the moment Close
// returned, its namespace living on, leaves nothing at all: the host reads
// as before without a Sweep, and a Sweep then finds nothing. (Close
// returns only once the pair is unlisted; the kernel's grace period after
// it, which the process's exit waits for, undoes nothing.)
func TestKilledRightAfterClose(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "swdd-")
	// A dead owner's files that an earlier test left for a host namespace
	// whose inode number this world's host now has again (the kernel
	// reuses them) are not this test's: swept first.
	if _, err := nat.Sweep(w.Host); err != nil {
		t.Fatal(err)
	}
	before := state(t, w)
	nstest.NewNS(t, "swdd-ns")
	for _, env := range [][]string{nil, {"NSNET_HELPER_PREFIX6=fd00:5:9::/64"}, {"NSNET_HELPER_PORT=8080"}} {
		cmd := nstest.Child("TestHelperConnect", append([]string{"NSNET_HELPER=connect", "NSNET_HELPER_HOST=" + w.HostName,
			"NSNET_HELPER_NS=swdd-ns", "NSNET_HELPER_PREFIX=10.5.9.0/24", "NSNET_HELPER_CLOSE=1"}, env...)...)
		cmd.Run() // killed
		sameState(t, w, before, fmt.Sprintf("state right after a Close and SIGKILL (%v)", env))
		if out := nstest.Cmd(t, "ip", "-n", "swdd-ns", "-o", "link"); strings.Contains(out, "eth0") {
			t.Errorf("the namespace holds more than lo after Close (%v):\n%s", env, out)
		}
		res, err := nat.Sweep(w.Host)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Links) != 0 || res.Elements != 0 || len(res.Uplinks) != 0 || res.ResolvConfs != 0 {
			t.Errorf("Sweep after a killed Close found leftovers (%v): %+v", env, res)
		}
		if _, err := os.Stat(filepath.Join(netns.EtcRoot, "swdd-ns", "resolv.conf")); err == nil {
			t.Errorf("the namespace's resolv.conf is left after a killed Close (%v)", env)
		}
	}
}

// TestSweepLeavesLiveOwners: with a live link of this process, a dead
// helper's link (killed after Connect) and another's killed in the middle
// of Connect are swept; the live link keeps working and its rules stay.
func TestSweepLeavesLiveOwners(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "swl-")
	live := nstest.NewNS(t, "swl-live")
	l, err := nat.Config{HostNS: w.Host}.Connect(live, "up0", netip.MustParsePrefix("10.5.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	before := state(t, w)
	killedChild(t, w, "swl-dead1", "10.5.1.0/24", "")
	killedChild(t, w, "swl-dead2", "10.5.2.0/24", "host link")
	res, err := nat.Sweep(w.Host)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Links) != 2 || res.Table || len(res.Uplinks) != 0 {
		t.Errorf("Sweep = %+v", res)
	}
	sameState(t, w, before, "state after Sweep")
	if !nstest.Ping(t, "swl-live", "203.0.113.1") {
		t.Error("the live link stopped working")
	}
	// Sweeping again finds nothing.
	if res, err := nat.Sweep(w.Host); err != nil || len(res.Links)+res.Elements != 0 {
		t.Errorf("second Sweep = %+v, %v", res, err)
	}
}

// TestSweepAtScale: 10,000 dead entries go in one Sweep (google/nftables
// put a batch's entries in one attribute whose 16-bit length wrapped past
// 64 KiB, leaving 683 of 2,001), and a live link's stay.
func TestSweepAtScale(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "swbig-")
	ns := nstest.NewNS(t, "swbig-ns")
	l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix("10.5.9.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const dead = `comment "nsnet owner=deaddeaddead pid=7"`
	var b strings.Builder
	n := 0
	for i := range 4000 {
		fmt.Fprintf(&b, "add element inet nsnet links { %d %s }\n", 1000000+i, dead)
		n++
	}
	for i := range 3000 {
		fmt.Fprintf(&b, "add element inet nsnet egress { %d . %d . ipv4 %s }\n", 1000000+i, 2000000+i, dead)
		fmt.Fprintf(&b, "add element inet nsnet claims { 100.%d.%d.%d . 30 %s : %d }\n", 64+i/16384, (i/64)%256, (i%64)*4, dead, 1000000+i)
		n += 2
	}
	// In files of 1,000 lines: without root (in a user namespace) nft
	// cannot raise its socket's buffer past net.core.wmem_max, and one
	// 10,000-element batch is refused as too long.
	lines := strings.SplitAfter(b.String(), "\n")
	for i := 0; i < len(lines); i += 1000 {
		file := fmt.Sprintf("%s/dead%d.nft", t.TempDir(), i)
		if err := os.WriteFile(file, []byte(strings.Join(lines[i:min(i+1000, len(lines))], "")), 0o600); err != nil {
			t.Fatal(err)
		}
		nftIn(t, w, "-f", file)
	}
	res, err := nat.Sweep(w.Host)
	if err != nil || res.Elements != n || res.Table {
		t.Errorf("Sweep = %+v, %v; want %d elements", res, err, n)
	}
	rules := nftIn(t, w, "list", "table", "inet", "nsnet")
	if c := strings.Count(rules, "deaddeaddead"); c != 0 {
		t.Errorf("%d dead entries left", c)
	}
	if !strings.Contains(rules, "10.5.9.0 . 24 comment") || !strings.Contains(rules, `"`+l.HostVeth+`" . "up0"`) {
		t.Errorf("the live link's entries went:\n%s", rules)
	}
	if !nstest.Ping(t, "swbig-ns", "203.0.113.1") {
		t.Error("the live link stopped working")
	}
}

// TestSweepRacingOthers: Sweeps running all the time while another process
// connects and closes return no error and remove nothing of the live
// process (whose Close would then fail).
func TestSweepRacingOthers(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "swrace-")
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	before := state(t, w)
	cmd := nstest.Child("TestHelperCycles", "NSNET_HELPER=cycles", "NSNET_HELPER_HOST="+w.HostName, "NSNET_HELPER_ID=0")
	done := make(chan error, 1)
	var out []byte
	go func() {
		var err error
		out, err = cmd.Output()
		done <- err
	}()
	sweeps := 0
	for {
		select {
		case err := <-done:
			if err != nil || !strings.Contains(string(out), "helper ok") {
				t.Errorf("the connecting process: %v\n%s", err, out)
			}
			t.Logf("%d Sweeps during the cycles", sweeps)
			sameState(t, w, before, "state after")
			return
		default:
		}
		if res, err := nat.Sweep(w.Host); err != nil || len(res.Links)+res.Elements != 0 {
			t.Errorf("Sweep %d = %+v, %v", sweeps, res, err)
		}
		sweeps++
	}
}
