package nat_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nstest"
)

// TestIPv6GlobalForwarding: on a kernel without per-interface IPv6
// forwarding (before 6.17; force_forwarding hidden here), Connect of an
// IPv6 link fails with ErrNoIPv6Forwarding naming the opt-in, changing
// nothing; with Config.IPv6GlobalForwarding it turns the global switch on
// with accept_ra 2 where it was 1 (default included); a link made
// meanwhile gets 2; a flushed ruleset gets the switch's records back; a
// second process shares the switch, which stays on after the first
// process's Close while the second lives, and its IPv6 still flows; after
// that process is killed, Sweep turns it off. At each end the host reads
// exactly as before: an interface that had forwarding 1 (which the
// switch going off resets) has it again, one with accept_ra 2 keeps it.
func TestIPv6GlobalForwarding(t *testing.T) {
	requireTools(t)
	nat.SetNoForceForwarding(true)
	defer nat.SetIPv6GlobalMode(ipv6Global)
	w := nstest.NewWorld(t, "v6g-")
	in := func(args ...string) string {
		return nstest.Cmd(t, "ip", append([]string{"-n", w.HostName}, args...)...)
	}
	in("link", "add", "odd0", "type", "veth", "peer", "name", "odd1")
	setSysctl(t, w, "net.ipv6.conf.odd0.forwarding", "1")
	setSysctl(t, w, "net.ipv6.conf.odd1.accept_ra", "2")
	dst := serve6(t, w)
	// A lan behind the host on an interface the switch records nothing of
	// (accept_ra 0, forwarding 0), and the uplink so too: only the forward
	// chain's drop keeps the lan's traffic from being forwarded while the
	// switch is on (a recorded interface's entry drops its traffic too).
	setSysctl(t, w, "net.ipv6.conf.up0.accept_ra", "0")
	nstest.NewNS(t, "v6g-lan")
	in("link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", "v6g-lan")
	setSysctl(t, w, "net.ipv6.conf.lan0.accept_ra", "0")
	in("addr", "add", "2001:db8:6::2/64", "dev", "lan0", "nodad")
	in("link", "set", "lan0", "up")
	nstest.Cmd(t, "ip", "-n", "v6g-lan", "link", "set", "eth0", "up")
	nstest.Cmd(t, "ip", "-n", "v6g-lan", "addr", "add", "2001:db8:6::1/64", "dev", "eth0", "nodad")
	nstest.Cmd(t, "ip", "-n", "v6g-lan", "route", "add", "default", "via", "2001:db8:6::2")
	inet(t, w, "ip", "-6", "route", "add", "2001:db8:6::/64", "via", "2001:db8::2")
	lanOut := func() bool { return nstest.Ping(t, "v6g-lan", "2001:db8::1") }
	setSysctl(t, w, "net.ipv6.conf.all.forwarding", "1")
	if !lanOut() {
		t.Fatal("the lan does not reach the outside even with the host forwarding: the test proves nothing")
	}
	setSysctl(t, w, "net.ipv6.conf.all.forwarding", "0")
	setSysctl(t, w, "net.ipv6.conf.odd0.forwarding", "1") // (the switch reset it)
	setSysctl(t, w, "net.ipv6.conf.default.forwarding", "0")
	before := state(t, w)

	ns := nstest.NewNS(t, "v6g-ns")
	_, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", p6("fd00:61::/64"))
	if !errors.Is(err, nat.ErrNoIPv6Forwarding) || !strings.Contains(err.Error(), "IPv6GlobalForwarding") {
		t.Fatalf("Connect without the opt-in: %v, want ErrNoIPv6Forwarding naming Config.IPv6GlobalForwarding", err)
	}
	sameState(t, w, before, "after the refused Connect")

	l, err := nat.Config{HostNS: w.Host, IPv6GlobalForwarding: true}.Connect(ns, "up0", p6("fd00:61::/64"))
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"net.ipv6.conf.all.forwarding": "1", "net.ipv6.conf.default.accept_ra": "2",
		"net.ipv6.conf.up0.accept_ra": "0", "net.ipv6.conf.odd1.accept_ra": "2", "net.ipv6.conf.up0.force_forwarding": "0",
		"net.ipv6.conf.lo.accept_ra": "2",
	} {
		if got := sysctl(t, w, key); got != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
	}
	if seen, err := nstest.Echo(ns, dst); err != nil || seen != "2001:db8::2" {
		t.Errorf("TCP over IPv6: %q %v", seen, err)
	}
	if lanOut() {
		t.Error("the host forwards the lan's IPv6 since nsnet turned the switch on")
	}
	in("link", "add", "late0", "type", "veth", "peer", "name", "late1")
	if got := sysctl(t, w, "net.ipv6.conf.late0.accept_ra"); got != "2" {
		t.Errorf("a link made while the switch is on: accept_ra %s, want 2 (default's)", got)
	}
	records := func() int {
		out, _ := nstest.CmdErr("ip", "netns", "exec", w.HostName, "nft", "list", "set", "inet", "nsnet", "opened")
		return strings.Count(out, "v6global")
	}
	if n := records(); n < 3 { // the switch's, up0's, odd0's, odd1's (forwarding 1 or accept_ra 1)...
		t.Errorf("%d records of the switch in the opened set", n)
	}
	n := records()
	inHost(t, w, "nft", "flush", "ruleset")
	deadline := time.Now().Add(5 * time.Second)
	for records() != n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := records(); got != n {
		t.Errorf("after a flushed ruleset: %d records, want %d back", got, n)
	}

	// A second process shares the switch.
	child := liveChild(t, w, "v6g-ns2", "fd00:62::/64", "", "NSNET_IPV6_GLOBAL=1")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := sysctl(t, w, "net.ipv6.conf.all.forwarding"); got != "1" {
		t.Errorf("the first process's Close turned the switch off under the second's link: %s", got)
	}
	if !nstest.Ping(t, "v6g-ns2", "2001:db8::1") {
		t.Error("the second process's IPv6 stopped when the first closed")
	}
	child.Process.Kill()
	child.Wait()
	if _, err := nat.Sweep(w.Host); err != nil {
		t.Fatal(err)
	}
	if got := sysctl(t, w, "net.ipv6.conf.late0.accept_ra"); got != "2" {
		t.Errorf("the link made meanwhile: accept_ra %s after the switch went off, want 2 (documented)", got)
	}
	in("link", "del", "late0")
	sameState(t, w, before, "after Close, a killed owner and Sweep")
}
