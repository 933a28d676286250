package nat_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nstest"
)

var connectSteps = []string{
	"nftables table", "inspect host", "veth", "nftables", "uplink forwarding", "namespace", "host link", "dns", "namespace lo",
}

var errInjected = errors.New("injected fault")

func failAt(step string) func(string) error {
	return func(s string) error {
		if s == step {
			return errInjected
		}
		return nil
	}
}

// TestConnectFaults makes each step of Connect fail in turn, first with no
// other link (the table is made in the same Connect), then next to a live
// one: the error names the step, and the host and the namespace read
// exactly as before.
func TestConnectFaults(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "flt-")
	ns := nstest.NewNS(t, "flt-ns")
	cfg := nat.Config{HostNS: w.Host}
	nsState := func() string {
		_, etcErr := os.Stat("/etc/netns/flt-ns") // its resolv.conf's directory: made and removed by nsnet
		return nstest.Steady(nstest.Cmd(t, "ip", "-n", "flt-ns", "-d", "link")+nstest.Cmd(t, "ip", "-n", "flt-ns", "-4", "route")) +
			fmt.Sprint("\n/etc/netns/flt-ns: ", etcErr)
	}
	for _, withLive := range []bool{false, true} {
		var live *nat.Link
		if withLive {
			other := nstest.NewNS(t, "flt-live")
			var err error
			// Not next to 10.6.1.0/24: the failed Connect's covers from
			// /23 to /17 are its own, which its undo must remove.
			if live, err = cfg.Connect(other, "up0", netip.MustParsePrefix("10.6.128.0/24")); err != nil {
				t.Fatal(err)
			}
		}
		before, nsBefore := state(t, w), nsState()
		for _, step := range connectSteps {
			if withLive && (step == "nftables table" || step == "uplink forwarding" || step == "namespace lo") {
				continue // the table exists, up0 forwards, lo is up (from the last round): no such step
			}
			nat.SetFailHook(failAt(step))
			l, err := cfg.Connect(ns, "up0", netip.MustParsePrefix("10.6.1.0/24"))
			nat.SetFailHook(nil)
			if err == nil {
				l.Close()
				t.Errorf("live=%v, %s: Connect succeeded", withLive, step)
				continue
			}
			if !errors.Is(err, errInjected) || !strings.Contains(err.Error(), step) {
				t.Errorf("live=%v, %s: error %q does not name the step", withLive, step, err)
			}
			if after := state(t, w); after != before {
				t.Errorf("live=%v, %s: host state changed:\n%s", withLive, step, lineDiff(before, after))
			}
			if after := nsState(); after != nsBefore {
				t.Errorf("live=%v, %s: namespace changed:\n%s\n---\n%s", withLive, step, nsBefore, after)
			}
		}
		// And the same Connect works once nothing fails.
		l, err := cfg.Connect(ns, "up0", netip.MustParsePrefix("10.6.1.0/24"))
		if err != nil {
			t.Fatal(err)
		}
		if !nstest.Ping(t, "flt-ns", "203.0.113.1") {
			t.Error("no traffic after the faults")
		}
		l.Close()
		if live != nil {
			live.Close()
		}
	}
}

// TestCloseFaults makes each step of Close fail in turn: Close reports it
// by name and still does the other steps.
func TestCloseFaults(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "cflt-")
	ns := nstest.NewNS(t, "cflt-ns")
	cfg := nat.Config{HostNS: w.Host}
	rules := func() string { return nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft", "list", "ruleset") }
	links := func() string { return nstest.Cmd(t, "ip", "-n", w.HostName, "-o", "link") }
	for _, step := range []string{"quiesce", "nftables", "uplink forwarding"} {
		l, err := cfg.Connect(ns, "up0", netip.MustParsePrefix("10.7.0.0/24"))
		if err != nil {
			t.Fatal(err)
		}
		nat.SetFailHook(failAt("close " + step))
		err = l.Close()
		nat.SetFailHook(nil)
		if !errors.Is(err, errInjected) || !strings.Contains(err.Error(), step) {
			t.Errorf("close %s: error %v", step, err)
		}
		if err2 := l.Close(); err2 != err {
			t.Errorf("close %s: second Close returned %v, not the first result", step, err2)
		}
		// A host end left is found by its mark.
		var leftName string
		for _, line := range strings.Split(links(), "\n") {
			if strings.Contains(line, "nsnet owner=") {
				f := strings.Fields(line)
				leftName, _, _ = strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			}
		}
		vethLeft := leftName != ""
		elemsLeft := strings.Contains(rules(), l.HostVeth)
		if vethLeft != (step == "quiesce") || elemsLeft != (step == "nftables") {
			t.Errorf("close %s: veth left %v, set entries left %v", step, vethLeft, elemsLeft)
		}
		// Clean up what the injected fault left, as a user would.
		if vethLeft {
			nstest.Cmd(t, "ip", "-n", w.HostName, "link", "del", leftName)
		}
		if elemsLeft {
			nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft", "delete", "table", "inet", "nsnet")
			nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "sysctl", "-qw", "net.ipv4.conf.up0.forwarding=0")
		}
	}
}
