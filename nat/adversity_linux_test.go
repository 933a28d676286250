package nat_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// Regression tests for issue 11: each case broke isolation, another
// owner's live link or the host before the second version of the core.

// unsolicited reports whether the outside host (which routes 10.0.0.0/8 to
// the uplink) reaches ip inside a connected namespace with a ping.
func unsolicited(t *testing.T, w *nstest.World, ip string) bool {
	t.Helper()
	nstest.CmdErr("ip", "-n", w.InetName, "route", "replace", "10.0.0.0/8", "via", "203.0.113.2")
	return nstest.Ping(t, w.InetName, ip)
}

func nftIn(t *testing.T, w *nstest.World, args ...string) string {
	t.Helper()
	return inHost(t, w, append([]string{"nft"}, args...)...)
}

// inHost runs a command in w's host namespace and returns its output.
func inHost(t *testing.T, w *nstest.World, args ...string) string {
	t.Helper()
	return nstest.Cmd(t, "ip", append([]string{"netns", "exec", w.HostName}, args...)...)
}

func forwarding(t *testing.T, w *nstest.World, dev string) string {
	t.Helper()
	return strings.TrimSpace(nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "cat", "/proc/sys/net/ipv4/conf/"+dev+"/forwarding"))
}

// TestFailedConnectKeepsLiveLink: a second Connect with the same HostVeth
// fails, and its undo leaves the live link's entries alone.
func TestFailedConnectKeepsLiveLink(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "dup-")
	ns1, ns2 := nstest.NewNS(t, "dup-ns1"), nstest.NewNS(t, "dup-ns2")
	before := state(t, w)
	cfg := nat.Config{HostNS: w.Host, HostVeth: "hv0"}
	l1, err := cfg.Connect(ns1, "up0", netip.MustParsePrefix("10.0.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Connect(ns2, "up0", netip.MustParsePrefix("10.0.1.0/24")); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second Connect with HostVeth hv0: %v, want os.ErrExist", err)
	}
	if unsolicited(t, w, "10.0.0.2") {
		t.Error("the outside reaches the live link unsolicited after the failed Connect")
	}
	if !nstest.Ping(t, "dup-ns1", "203.0.113.1") {
		t.Error("the live link stopped working")
	}
	if err := l1.Close(); err != nil {
		t.Errorf("Close of the live link: %v", err)
	}
	nstest.Cmd(t, "ip", "-n", w.InetName, "route", "del", "10.0.0.0/8")
	sameState(t, w, before, "state after Close")
}

// TestAddRulesTwiceOnOneLink: a second Rules on a link that has one is
// refused (os.ErrExist), so closing the first cannot strip the second's.
func TestAddRulesTwiceOnOneLink(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "twice-")
	nstest.Cmd(t, "ip", "-n", w.HostName, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	nstest.Cmd(t, "ip", "-n", w.HostName, "addr", "add", "10.0.0.1/24", "dev", "v0")
	before := state(t, w)
	r1, err := nat.AddRules(w.Host, "v0", "up0", netip.MustParsePrefix("10.0.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if r2, err := nat.AddRules(w.Host, "v0", "up0", netip.MustParsePrefix("10.0.1.0/24")); !errors.Is(err, os.ErrExist) {
		if r2 != nil {
			r2.Close()
		}
		t.Fatalf("second AddRules on v0: %v, want os.ErrExist", err)
	}
	if !strings.Contains(nftIn(t, w, "list", "set", "inet", "nsnet", "links"), `"v0"`) {
		t.Error("the refused AddRules removed the first one's entry")
	}
	if err := r1.Close(); err != nil {
		t.Error(err)
	}
	// v0's forwarding stays on after Close (the link is the caller's).
	nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "sysctl", "-qw", "net.ipv4.conf.v0.forwarding=0")
	sameState(t, w, before, "state after Close")
}

// TestHelperHold is not a test: it is the body of helper processes that
// connect NSNET_HELPER_NS with NSNET_HELPER_PREFIX through
// NSNET_HELPER_HOST's up0, print "connected", and close the link when a
// line arrives on stdin, printing "closed" and Close's error.
func TestHelperHold(t *testing.T) {
	if os.Getenv("NSNET_HELPER") != "hold" {
		return
	}
	if os.Getpid() == 1 {
		// A PID namespace of its own needs a /proc of its own, as with
		// "unshare --pid --fork --mount-proc" (the mount namespace is new
		// too): the outer /proc does not know this process's thread ids.
		if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("proc", "/proc", "proc", 0, ""); err != nil {
			t.Fatal(err)
		}
	}
	host, err := netns.Open(os.Getenv("NSNET_HELPER_HOST"))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.Open(os.Getenv("NSNET_HELPER_NS"))
	if err != nil {
		t.Fatal(err)
	}
	uplink := os.Getenv("NSNET_HELPER_UPLINK")
	if uplink == "" {
		uplink = "up0"
	}
	l, err := nat.Config{HostNS: host}.Connect(ns, uplink, netip.MustParsePrefix(os.Getenv("NSNET_HELPER_PREFIX")))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("connected pid=%d\n", os.Getpid())
	bufio.NewReader(os.Stdin).ReadString('\n')
	err = l.Close()
	fmt.Println("closed", err)
}

// holder is a running TestHelperHold process.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

// hold starts a helper holding a link; with newPID it runs as pid 1 of a
// PID namespace of its own (as under "unshare --pid --fork").
func hold(t *testing.T, w *nstest.World, nsName, prefix string, newPID bool, env ...string) *holder {
	t.Helper()
	nstest.NewNS(t, nsName)
	cmd := nstest.Child("TestHelperHold", append([]string{"NSNET_HELPER=hold", "NSNET_HELPER_HOST=" + w.HostName,
		"NSNET_HELPER_NS=" + nsName, "NSNET_HELPER_PREFIX=" + prefix}, env...)...)
	if newPID {
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
	}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &holder{cmd, stdin, bufio.NewScanner(stdout)}
	t.Cleanup(func() { h.cmd.Process.Kill(); h.cmd.Wait() })
	if line := h.next(t, "connected"); newPID && line != "connected pid=1" {
		t.Fatalf("helper says %q, want pid 1 in its own PID namespace", line)
	}
	return h
}

// next returns the first line of the helper's output starting with want.
func (h *holder) next(t *testing.T, want string) string {
	t.Helper()
	got := make(chan string, 1)
	var seen []string
	go func() {
		for h.out.Scan() {
			if strings.HasPrefix(h.out.Text(), want) {
				got <- h.out.Text()
				return
			}
			seen = append(seen, h.out.Text())
		}
		got <- "eof"
	}()
	select {
	case line := <-got:
		if line == "eof" {
			t.Fatalf("helper ended before saying %q:\n%s", want, strings.Join(seen, "\n"))
		}
		return line
	case <-time.After(20 * time.Second):
		t.Fatalf("helper did not say %q", want)
	}
	return ""
}

// close makes the helper close its link and returns Close's result.
func (h *holder) close(t *testing.T) string {
	t.Helper()
	io.WriteString(h.stdin, "close\n")
	return h.next(t, "closed")
}

// TestOwnersInPIDNamespaces: live owners that are pid 1 of their own PID
// namespaces are neither swept by a process outside them nor confused
// with each other: the first one's Close leaves the second's forwarding.
func TestOwnersInPIDNamespaces(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "pidns-")
	before := state(t, w)
	h1 := hold(t, w, "pidns-ns1", "10.1.1.0/24", true)
	h2 := hold(t, w, "pidns-ns2", "10.1.2.0/24", true)
	res, err := nat.Sweep(w.Host)
	if err != nil || len(res.Links)+res.Elements != 0 {
		t.Errorf("Sweep with two live owners in PID namespaces = %+v, %v", res, err)
	}
	if got := h1.close(t); got != "closed <nil>" {
		t.Errorf("first owner: %s", got)
	}
	if forwarding(t, w, "up0") != "1" {
		t.Error("the first owner's Close turned the uplink's forwarding off under the second")
	}
	if !nstest.Ping(t, "pidns-ns2", "203.0.113.1") {
		t.Error("the second owner's link stopped working")
	}
	if got := h2.close(t); got != "closed <nil>" {
		t.Errorf("second owner: %s", got)
	}
	sameState(t, w, before, "state after both closed")
}

// TestHelperRace is not a test: the body of helper processes that try
// NSNET_HELPER_TRIES times to connect the same prefix, hold it a moment
// and close it, printing when each hold began and ended.
func TestHelperRace(t *testing.T) {
	if os.Getenv("NSNET_HELPER") != "race" {
		return
	}
	host, err := netns.Open(os.Getenv("NSNET_HELPER_HOST"))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	// Start together, at the moment the parent named.
	var start int64
	fmt.Sscan(os.Getenv("NSNET_HELPER_START"), &start)
	time.Sleep(time.Until(time.Unix(0, start)))
	for range 50 {
		l, err := nat.Config{HostNS: host}.Connect(ns, "up0", netip.MustParsePrefix("10.2.0.0/24"))
		if err != nil {
			if !errors.Is(err, nat.ErrOverlap) {
				t.Fatal(err)
			}
			continue
		}
		from := time.Now().UnixNano()
		time.Sleep(time.Millisecond)
		to := time.Now().UnixNano()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("held %d %d\n", from, to)
	}
	fmt.Println("race done")
}

// TestPrefixExclusiveAcrossProcesses: two processes connecting the same
// prefix 50 times each, at the same moments: never both hold it.
func TestPrefixExclusiveAcrossProcesses(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "race-")
	before := state(t, w)
	start := time.Now().Add(300 * time.Millisecond).UnixNano()
	var outs [2][]byte
	var wg sync.WaitGroup
	var errs [2]error
	for i := range 2 {
		wg.Go(func() {
			cmd := nstest.Child("TestHelperRace", "NSNET_HELPER=race", "NSNET_HELPER_HOST="+w.HostName,
				fmt.Sprintf("NSNET_HELPER_START=%d", start))
			outs[i], errs[i] = cmd.Output()
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("helper %d: %v:\n%s", i, err, outs[i])
		}
	}
	type span struct{ from, to int64 }
	var holds [2][]span
	for i, out := range outs {
		if !strings.Contains(string(out), "race done") {
			t.Fatalf("helper %d:\n%s", i, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			var s span
			if n, _ := fmt.Sscanf(line, "held %d %d", &s.from, &s.to); n == 2 {
				holds[i] = append(holds[i], s)
			}
		}
	}
	if len(holds[0])+len(holds[1]) == 0 {
		t.Fatal("no process ever held the prefix: the test proves nothing")
	}
	for _, a := range holds[0] {
		for _, b := range holds[1] {
			if a.from < b.to && b.from < a.to {
				t.Fatalf("both processes held 10.2.0.0/24 at once: %v and %v", a, b)
			}
		}
	}
	t.Logf("holds: %d and %d", len(holds[0]), len(holds[1]))
	sameState(t, w, before, "state after the race")
}

// TestCloseAfterHostChanges: Close undoes exactly what its Connect made,
// whatever happened to the names meanwhile.
func TestCloseAfterHostChanges(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "chg-")
	ns1, ns2 := nstest.NewNS(t, "chg-ns1"), nstest.NewNS(t, "chg-ns2")
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	before := state(t, w)
	ip := func(args ...string) { nstest.Cmd(t, "ip", append([]string{"-n", w.HostName}, args...)...) }

	t.Run("veth deleted and its name reused", func(t *testing.T) {
		cfg := nat.Config{HostNS: w.Host, HostVeth: "hv0"}
		l1, err := cfg.Connect(ns1, "up0", netip.MustParsePrefix("10.3.1.0/24"))
		if err != nil {
			t.Fatal(err)
		}
		ip("link", "del", "hv0")
		l2, err := cfg.Connect(ns2, "up0", netip.MustParsePrefix("10.3.2.0/24"))
		if err != nil {
			t.Fatal(err)
		}
		if err := l1.Close(); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Close after its veth was deleted: %v, want os.ErrNotExist", err)
		}
		if from, err := nstest.Echo(ns2, "203.0.113.1:8080"); err != nil || from != "203.0.113.2" {
			t.Errorf("the new owner of the name lost its link: %q %v", from, err)
		}
		if err := l2.Close(); err != nil {
			t.Error(err)
		}
	})
	t.Run("veth renamed", func(t *testing.T) {
		l, err := nat.Config{HostNS: w.Host}.Connect(ns1, "up0", netip.MustParsePrefix("10.3.1.0/24"))
		if err != nil {
			t.Fatal(err)
		}
		ip("link", "set", l.HostVeth, "name", "renamed0")
		if from, err := nstest.Echo(ns1, "203.0.113.1:8080"); err != nil || from != "203.0.113.2" {
			t.Errorf("traffic after the rename: %q %v", from, err)
		}
		if err := l.Close(); err != nil {
			t.Errorf("Close after a rename: %v", err)
		}
	})
	t.Run("uplink renamed", func(t *testing.T) {
		l, err := nat.Config{HostNS: w.Host}.Connect(ns1, "up0", netip.MustParsePrefix("10.3.1.0/24"))
		if err != nil {
			t.Fatal(err)
		}
		ip("link", "set", "up0", "name", "wan0")
		defer ip("link", "set", "wan0", "name", "up0")
		if from, err := nstest.Echo(ns1, "203.0.113.1:8080"); err != nil || from != "203.0.113.2" {
			t.Errorf("through the renamed uplink: seen from %q (want the masqueraded 203.0.113.2), %v", from, err)
		}
		if err := l.Close(); err != nil {
			t.Errorf("Close after the uplink's rename: %v", err)
		}
	})
	t.Run("ruleset flushed", func(t *testing.T) {
		l, err := nat.Config{HostNS: w.Host}.Connect(ns1, "up0", netip.MustParsePrefix("10.3.1.0/24"))
		if err != nil {
			t.Fatal(err)
		}
		nftIn(t, w, "flush", "ruleset")
		// The process's guard may have restored the table already (see
		// TestSurvivesFlush); if not, Close says what was gone.
		if err := l.Close(); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Close after a flush: %v, want nil or os.ErrNotExist", err)
		}
		if f := forwarding(t, w, "up0"); f != "0" {
			t.Errorf("uplink forwarding after Close = %s, want 0 as before", f)
		}
	})
	sameState(t, w, before, "state after the cases")
}

// TestUplinkReplugged: the uplink deleted and made again (a replugged NIC)
// while a link is live: nothing leaves un-masqueraded by the new one, and
// Close removes everything, the table included.
func TestUplinkReplugged(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "plug-")
	ns := nstest.NewNS(t, "plug-ns")
	l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix("10.4.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	nstest.Cmd(t, "ip", "-n", w.HostName, "link", "del", "up0")
	nstest.Cmd(t, "ip", "-n", w.HostName, "link", "add", "up0", "type", "veth", "peer", "name", "inet0", "netns", w.InetName)
	for _, c := range [][]string{{"-n", w.HostName, "addr", "add", "203.0.113.2/24", "dev", "up0"},
		{"-n", w.InetName, "addr", "add", "203.0.113.1/24", "dev", "inet0"},
		{"-n", w.HostName, "link", "set", "up0", "up"}, {"-n", w.InetName, "link", "set", "inet0", "up"}} {
		nstest.Cmd(t, "ip", c...)
	}
	// The new uplink forwards (as if the host's own config turned it on):
	// only the rules stand between the link and an un-masqueraded exit.
	nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "sysctl", "-qw", "net.ipv4.conf.up0.forwarding=1")
	nstest.Cmd(t, "ip", "netns", "exec", w.InetName, "nft", "add table ip watch; add chain ip watch in { type filter hook input priority 0; }; add rule ip watch in ip saddr 10.4.1.0/24 counter")
	nstest.Ping(t, "plug-ns", "203.0.113.1")
	if c := nstest.Cmd(t, "ip", "netns", "exec", w.InetName, "nft", "list", "table", "ip", "watch"); !strings.Contains(c, "counter packets 0 ") {
		t.Errorf("private source reached the outside through the replugged uplink:\n%s", c)
	}
	if err := l.Close(); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close after the replug: %v", err)
	}
	if r := nftIn(t, w, "list", "ruleset"); strings.Contains(r, "nsnet") {
		t.Errorf("Close left the table:\n%s", r)
	}
}

// TestForeignTableNamedNsnet: a table inet nsnet that nsnet did not make is
// refused, and neither changed nor deleted, by Connect.
func TestForeignTableNamedNsnet(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "ftn-")
	ns := nstest.NewNS(t, "ftn-ns")
	nftIn(t, w, "add table inet nsnet; add set inet nsnet links { type ifname; }")
	before := state(t, w)
	_, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix("10.4.2.0/24"))
	if !errors.Is(err, nat.ErrForeignTable) {
		t.Errorf("Connect next to a foreign table inet nsnet: %v, want ErrForeignTable", err)
	}
	sameState(t, w, before, "state changed")
}

// TestSetsListable: every set (and the claims map) can be listed by name
// with nft (fwd, the old name of uplinks, is an nft keyword).
func TestSetsListable(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "lst-")
	ns := nstest.NewNS(t, "lst-ns")
	l, err := nat.Config{HostNS: w.Host, AllowSiblings: true}.Connect(ns, "up0", netip.MustParsePrefix("10.4.3.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, set := range []string{"set links", "set egress", "set siblings", "map claims", "set uplinks"} {
		kind, name, _ := strings.Cut(set, " ")
		out, err := nstest.CmdErr("ip", "netns", "exec", w.HostName, "nft", "list", kind, "inet", "nsnet", name)
		if err != nil || !strings.Contains(out, "nsnet owner=") {
			t.Errorf("nft list %s inet nsnet %s: %v\n%s", kind, name, err, out)
		}
	}
}

// TestConnectInsideDo: a nil HostNS means the caller's namespace even when
// the caller is a thread inside Handle.Do.
func TestConnectInsideDo(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "do-")
	ns := nstest.NewNS(t, "do-ns")
	err := w.Host.Do(func() error {
		l, err := nat.Connect(ns, "up0", netip.MustParsePrefix("10.4.4.0/24"))
		if err != nil {
			return err
		}
		return l.Close()
	})
	if err != nil {
		t.Error(err)
	}
}

// TestCloseIgnoresEditedFields: Close undoes from its own record, not from
// the exported fields a caller may have changed.
func TestCloseIgnoresEditedFields(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "edit-")
	ns1, ns2 := nstest.NewNS(t, "edit-ns1"), nstest.NewNS(t, "edit-ns2")
	before := state(t, w)
	cfg := nat.Config{HostNS: w.Host}
	l1, err := cfg.Connect(ns1, "up0", netip.MustParsePrefix("10.4.5.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	l2, err := cfg.Connect(ns2, "up0", netip.MustParsePrefix("10.4.6.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	l1.HostVeth, l1.Prefix, l1.Uplink = l2.HostVeth, l2.Prefix, "lo"
	if err := l1.Close(); err != nil {
		t.Error(err)
	}
	if !nstest.Ping(t, "edit-ns2", "203.0.113.1") {
		t.Error("closing an edited Link broke another")
	}
	if err := l2.Close(); err != nil {
		t.Error(err)
	}
	sameState(t, w, before, "state after Close")
}

// TestNilAndZeroValues: no exported call panics on nil or zero values.
func TestNilAndZeroValues(t *testing.T) {
	var nilLink *nat.Link
	var nilRules *nat.Rules
	// Each error matches a sentinel a caller can test for.
	for name, c := range map[string]struct {
		f    func() error
		want error
	}{
		"nil Link Close":    {func() error { return nilLink.Close() }, os.ErrInvalid},
		"zero Link Close":   {func() error { return (&nat.Link{}).Close() }, os.ErrInvalid},
		"nil Rules Close":   {func() error { return nilRules.Close() }, os.ErrInvalid},
		"zero Rules Close":  {func() error { return (&nat.Rules{}).Close() }, os.ErrInvalid},
		"CloseAll zero":     {func() error { return nat.CloseAll(&nat.Link{}) }, os.ErrInvalid},
		"Do(nil)":           {func() error { return (*netns.Handle)(nil).Do(nil) }, os.ErrInvalid},
		"Run(nil)":          {func() error { return (*netns.Handle)(nil).Run(nil) }, os.ErrInvalid},
		"Start(nil)":        {func() error { return (*netns.Handle)(nil).Start(nil) }, os.ErrInvalid},
		"Connect nil ns":    {func() error { _, err := nat.Connect(nil, "up0", netip.MustParsePrefix("10.0.0.0/24")); return err }, nat.ErrInvalidConfig},
		"Connect zero cidr": {func() error { _, err := nat.Connect(nil, "", netip.Prefix{}); return err }, nat.ErrInvalidConfig},
	} {
		f := c.f
		func() {
			defer func() {
				if v := recover(); v != nil {
					t.Errorf("%s panicked: %v", name, v)
				}
			}()
			if err := f(); !errors.Is(err, c.want) {
				t.Errorf("%s: %v, want an error matching %v", name, err, c.want)
			}
		}()
	}
	if s := nilLink.String(); s == "" {
		t.Error("nil Link String is empty")
	}
}

// TestTemplateNames: a name with % is a kernel template (hv%d becomes
// hv0): refused before the kernel sees it, as are names the kernel reads
// as white space.
func TestTemplateNames(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "tpl-")
	ns := nstest.NewNS(t, "tpl-ns")
	before := state(t, w)
	for _, c := range []nat.Config{{HostNS: w.Host, HostVeth: "hv%d"}, {HostNS: w.Host, NSVeth: "e%d"},
		{HostNS: w.Host, HostVeth: "a\xa0b"}, {HostNS: w.Host, HostVeth: "a\nb"}} {
		if _, err := c.Connect(ns, "up0", netip.MustParsePrefix("10.4.7.0/24")); !errors.Is(err, nat.ErrInvalidName) {
			t.Errorf("Connect with %q/%q: %v, want ErrInvalidName", c.HostVeth, c.NSVeth, err)
		}
	}
	sameState(t, w, before, "state changed")
}

// TestOverlapNamesHolderAndReclaimsDead: an overlap with another process's
// live link names it and its pid; a prefix held only by a dead process's
// leftovers (killed after Connect, or in the middle of it) is reclaimed by
// Connect itself.
func TestOverlapNamesHolderAndReclaimsDead(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "hold-")
	ns := nstest.NewNS(t, "hold-ns")
	h := hold(t, w, "hold-live", "10.6.0.0/24", false)
	_, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix("10.6.0.0/25"))
	if !errors.Is(err, nat.ErrOverlap) || !strings.Contains(err.Error(), "link nsn-") ||
		!strings.Contains(err.Error(), fmt.Sprintf("live pid %d", h.cmd.Process.Pid)) {
		t.Errorf("overlap with a live process's link: %v", err)
	}
	for _, c := range []struct{ prefix, step string }{{"10.6.1.0/24", ""}, {"10.6.2.0/24", "host link"}, {"10.6.3.0/24", "namespace"}} {
		killedChild(t, w, "hold-dead"+c.prefix[5:6], c.prefix, c.step)
		l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix(c.prefix))
		if err != nil {
			t.Errorf("%s held by a dead process (killed at %q): %v", c.prefix, c.step, err)
			continue
		}
		if !nstest.Ping(t, "hold-ns", "203.0.113.1") {
			t.Errorf("%s: the reclaimed prefix does not work", c.prefix)
		}
		l.Close()
	}
	if got := h.close(t); got != "closed <nil>" {
		t.Errorf("live holder: %s", got)
	}
}

// TestRenamedUplinkSharedByProcesses: the uplink renamed under a live link;
// another process connects through it by its new name; the first one's
// Close leaves the second's forwarding and masquerade (users are counted
// by the uplink's index, not its name).
func TestRenamedUplinkSharedByProcesses(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "ren-")
	ns := nstest.NewNS(t, "ren-ns")
	before := state(t, w)
	l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix("10.8.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	nstest.Cmd(t, "ip", "-n", w.HostName, "link", "set", "up0", "name", "wan0")
	h := hold(t, w, "ren-other", "10.8.2.0/24", false, "NSNET_HELPER_UPLINK=wan0")
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if f := forwarding(t, w, "wan0"); f != "1" {
		t.Errorf("the first process's Close turned wan0's forwarding to %s under the second", f)
	}
	if !nstest.Ping(t, "ren-other", "203.0.113.1") {
		t.Error("the second process's link stopped working")
	}
	if got := h.close(t); got != "closed <nil>" {
		t.Errorf("second process: %s", got)
	}
	nstest.Cmd(t, "ip", "-n", w.HostName, "link", "set", "wan0", "name", "up0")
	sameState(t, w, before, "state after both closed")
}

// TestClaimsRefuseOverlaps: the claims map alone (AddRules does not look
// at the host's routes) refuses a prefix inside, around or equal to a
// live one, and takes a prefix around a closed one again.
func TestClaimsRefuseOverlaps(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "clm-")
	for _, v := range []string{"v0", "v2"} {
		nstest.Cmd(t, "ip", "-n", w.HostName, "link", "add", v, "type", "veth", "peer", "name", v+"p")
	}
	r, err := nat.AddRules(w.Host, "v0", "up0", netip.MustParsePrefix("10.9.4.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"10.9.4.0/24", "10.9.4.128/25", "10.9.0.0/16", "10.0.0.0/8"} {
		if r2, err := nat.AddRules(w.Host, "v2", "up0", netip.MustParsePrefix(p)); !errors.Is(err, nat.ErrOverlap) {
			if r2 != nil {
				r2.Close()
			}
			t.Errorf("AddRules %s next to a live 10.9.4.0/24: %v, want ErrOverlap", p, err)
		}
	}
	for _, p := range []string{"10.9.5.0/24", "10.9.3.0/24"} { // beside it: fine
		r2, err := nat.AddRules(w.Host, "v2", "up0", netip.MustParsePrefix(p))
		if err != nil {
			t.Errorf("AddRules %s beside 10.9.4.0/24: %v", p, err)
			continue
		}
		r2.Close()
	}
	keep, err := nat.AddRules(w.Host, "v2", "up0", netip.MustParsePrefix("10.10.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	r.Close()
	// 10.9.4.0/24 is gone; the prefixes around it are free again although
	// the table (and its covers) stayed for the other Rules.
	r3, err := nat.AddRules(w.Host, "v0", "up0", netip.MustParsePrefix("10.9.0.0/16"))
	if err != nil {
		t.Fatalf("AddRules 10.9.0.0/16 after 10.9.4.0/24 closed: %v", err)
	}
	r3.Close()
}
