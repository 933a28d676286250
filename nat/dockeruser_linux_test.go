package nat_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/veth"
)

// dockerHost gives the world's host Docker's filter chains as Docker 28
// makes them with iptables-nft: FORWARD drops by policy and jumps to
// DOCKER-USER first, then to Docker's own chain.
func dockerHost(t *testing.T, w *nstest.World) (iptables func(args ...string) string) {
	t.Helper()
	nstest.RequireCmd(t, "iptables-nft")
	iptables = func(args ...string) string {
		t.Helper()
		return nstest.Cmd(t, "ip", append([]string{"netns", "exec", w.HostName, "iptables-nft"}, args...)...)
	}
	for _, cmd := range [][]string{
		{"-N", "DOCKER-USER"}, {"-N", "DOCKER-FORWARD"},
		{"-A", "FORWARD", "-j", "DOCKER-USER"}, {"-A", "FORWARD", "-j", "DOCKER-FORWARD"},
		{"-A", "DOCKER-FORWARD", "-o", "docker0", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
		{"-A", "DOCKER-USER", "-j", "RETURN"},
		{"-P", "FORWARD", "DROP"},
	} {
		iptables(cmd...)
	}
	return iptables
}

// TestDockerUser: on a Docker host (iptables-nft), Connect refuses by
// default and points at Config.DockerUser; with it, the link's traffic
// passes Docker's chain through two rules at the top of DOCKER-USER that
// iptables itself reads back, nothing unsolicited reaches the namespace,
// and Close (or a failed Connect) leaves Docker's table as it was, byte
// for byte, while another link's rules stay.
func TestDockerUser(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "dku-")
	iptables := dockerHost(t, w)
	before := iptables("-S")
	ns1, ns2 := nstest.NewNS(t, "dku-ns1"), nstest.NewNS(t, "dku-ns2")
	p1, p2 := netip.MustParsePrefix("10.30.1.0/24"), netip.MustParsePrefix("10.30.2.0/24")

	_, err := nat.Config{HostNS: w.Host}.Connect(ns1, "up0", p1)
	if !errors.Is(err, nat.ErrForeignDrop) || !strings.Contains(err.Error(), "ip filter FORWARD") || !strings.Contains(err.Error(), "DockerUser") {
		t.Fatalf("Connect on a Docker host: %v, want ErrForeignDrop naming ip filter FORWARD and DockerUser", err)
	}

	// A failure after the DOCKER-USER step takes its rules out again.
	nat.SetFailHook(func(step string) error {
		if step == "host link" {
			return errors.New("injected")
		}
		return nil
	})
	_, err = nat.Config{HostNS: w.Host, DockerUser: true}.Connect(ns1, "up0", p1)
	nat.SetFailHook(nil)
	if err == nil {
		t.Fatal("Connect with an injected failure succeeded")
	}
	if after := iptables("-S"); after != before {
		t.Errorf("failed Connect left rules in Docker's table:\n%s", lineDiff(before, after))
	}

	cfg := nat.Config{HostNS: w.Host, DockerUser: true}
	l1, err := cfg.Connect(ns1, "up0", p1)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := cfg.Connect(ns2, "up0", p2)
	if err != nil {
		t.Fatal(err)
	}
	rules := iptables("-S", "DOCKER-USER")
	for _, l := range []*nat.Link{l1, l2} {
		for _, dir := range []string{"-i", "-o"} {
			re := fmt.Sprintf(`(?m)^-A DOCKER-USER %s %s -m comment --comment "nsnet owner=\w+ pid=\d+ link=%s index=\d+" -j ACCEPT$`, dir, l.HostVeth, l.HostVeth)
			if !regexp.MustCompile(re).MatchString(rules) {
				t.Errorf("no %s rule for %s that iptables reads back:\n%s", dir, l.HostVeth, rules)
			}
		}
	}
	if lines := strings.Split(strings.TrimSpace(rules), "\n"); lines[len(lines)-1] != "-A DOCKER-USER -j RETURN" {
		t.Errorf("the rules are not above Docker's RETURN:\n%s", rules)
	}
	for _, ns := range []string{"dku-ns1", "dku-ns2"} {
		if !nstest.Ping(t, ns, "203.0.113.1") {
			t.Errorf("%s: no traffic through Docker's FORWARD chain", ns)
		}
	}
	if unsolicited(t, w, l1.NSAddr.Addr().String()) {
		t.Error("the outside reaches the namespace: DOCKER-USER's accept let it in")
	}

	if err := l1.Close(); err != nil {
		t.Fatal(err)
	}
	rules = iptables("-S", "DOCKER-USER")
	if strings.Contains(rules, l1.HostVeth) || !strings.Contains(rules, l2.HostVeth) {
		t.Errorf("after closing %s:\n%s", l1.HostVeth, rules)
	}
	if !nstest.Ping(t, "dku-ns2", "203.0.113.1") {
		t.Error("the other link lost its traffic")
	}
	if err := nat.CloseAll(l2); err != nil {
		t.Fatal(err)
	}
	if after := iptables("-S"); after != before {
		t.Errorf("Docker's table after Close:\n%s", lineDiff(before, after))
	}
}

// TestDockerUserGoneAndSwept: rules someone else removed make Close say
// so (os.ErrNotExist) and remove the rest; the rules of a killed process
// are removed by Sweep, those of live ones stay; without DOCKER-USER in
// nftables (legacy iptables), Connect says what to run.
func TestDockerUserGoneAndSwept(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "dkg-")
	iptables := dockerHost(t, w)
	before := iptables("-S")
	ns := nstest.NewNS(t, "dkg-ns1")
	l, err := nat.Config{HostNS: w.Host, DockerUser: true}.Connect(ns, "up0", netip.MustParsePrefix("10.31.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	iptables("-D", "DOCKER-USER", "1") // its first rule, by someone else
	// The guard may put it back first (see TestDockerUserSurvivesRebuild);
	// if not, Close says what was gone.
	if err := l.Close(); err != nil && (!errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "1 of its 2 rules")) {
		t.Errorf("Close after a rule was deleted: %v, want nil or ErrNotExist saying 1 of its 2 rules", err)
	}
	if after := iptables("-S"); after != before {
		t.Errorf("Docker's table after Close:\n%s", lineDiff(before, after))
	}

	live := nstest.NewNS(t, "dkg-live")
	l, err = nat.Config{HostNS: w.Host, DockerUser: true}.Connect(live, "up0", netip.MustParsePrefix("10.31.2.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	withLive := iptables("-S")
	killedChild(t, w, "dkg-dead", "10.31.3.0/24", "", "NSNET_HELPER_DOCKERUSER=1")
	if iptables("-S") == withLive {
		t.Fatal("the killed helper left no rule: the test proves nothing")
	}
	res, err := nat.Sweep(w.Host)
	if err != nil {
		t.Fatal(err)
	}
	if res.DockerUser != 2 {
		t.Errorf("Sweep removed %d DOCKER-USER rules, want 2", res.DockerUser)
	}
	if after := iptables("-S"); after != withLive {
		t.Errorf("Sweep changed more than the dead owner's rules:\n%s", lineDiff(withLive, after))
	}

	t.Run("legacy", func(t *testing.T) {
		nstest.RequireCmd(t, "iptables-legacy")
		w := nstest.NewWorld(t, "dkl-")
		nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "iptables-legacy", "-P", "FORWARD", "DROP")
		ns := nstest.NewNS(t, "dkl-ns")
		_, err := nat.Config{HostNS: w.Host, DockerUser: true}.Connect(ns, "up0", netip.MustParsePrefix("10.31.4.0/24"))
		if !errors.Is(err, nat.ErrForeignDrop) || !strings.Contains(err.Error(), `"iptables -I DOCKER-USER -i nsn-+ -j ACCEPT"`) {
			t.Errorf("Connect on a legacy Docker host: %v, want ErrForeignDrop with the commands", err)
		}
	})
}

// TestDockerUserSurvivesRebuild: the link's DOCKER-USER rules come back by
// themselves after "iptables -F DOCKER-USER" and after a flushed ruleset
// that Docker rebuilds (its chains made again, as on a restart), and the
// link's traffic passes Docker's chain again; Close then leaves Docker's
// table as Docker made it.
func TestDockerUserSurvivesRebuild(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "dkr-")
	iptables := dockerHost(t, w)
	ns := nstest.NewNS(t, "dkr-ns")
	l, err := nat.Config{HostNS: w.Host, DockerUser: true}.Connect(ns, "up0", netip.MustParsePrefix("10.30.9.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	back := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if strings.Count(iptables("-S", "DOCKER-USER"), "link="+l.HostVeth+" ") == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s, the link's DOCKER-USER rules did not come back:\n%s", what, iptables("-S", "DOCKER-USER"))
			}
		}
		if !nstest.Ping(t, "dkr-ns", "203.0.113.1") {
			t.Errorf("after %s: no traffic through Docker's chain", what)
		}
	}
	iptables("-F", "DOCKER-USER")
	iptables("-A", "DOCKER-USER", "-j", "RETURN")
	back("iptables -F DOCKER-USER")

	nftIn(t, w, "flush", "ruleset")
	dockerHost(t, w) // Docker makes its chains again
	// Docker's table as Docker made it: the guard may have put the link's
	// rules back already.
	var kept []string
	for _, line := range strings.Split(iptables("-S"), "\n") {
		if !strings.Contains(line, "link="+l.HostVeth+" ") {
			kept = append(kept, line)
		}
	}
	before := strings.Join(kept, "\n")
	back("a flushed ruleset rebuilt by Docker")
	if err := l.Close(); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if after := iptables("-S"); after != before {
		t.Errorf("Docker's table after Close:\n%s", lineDiff(before, after))
	}
}

// TestDockerUserIPv6: Docker managing IPv6 too (ip6tables-nft: ip6 filter
// FORWARD dropping by policy, jumping to DOCKER-USER first): a dual-stack
// link is refused without DockerUser, naming the ip6 chain; with it, both
// families' DOCKER-USER get the link's two rules, both families pass, and
// Close leaves both tables as they were.
func TestDockerUserIPv6(t *testing.T) {
	requireTools(t)
	nstest.RequireCmd(t, "ip6tables-nft")
	w := nstest.NewWorld(t, "dku6-")
	iptables := dockerHost(t, w)
	ip6tables := func(args ...string) string {
		t.Helper()
		return nstest.Cmd(t, "ip", append([]string{"netns", "exec", w.HostName, "ip6tables-nft"}, args...)...)
	}
	for _, cmd := range [][]string{
		{"-N", "DOCKER-USER"}, {"-A", "FORWARD", "-j", "DOCKER-USER"}, {"-A", "DOCKER-USER", "-j", "RETURN"}, {"-P", "FORWARD", "DROP"},
	} {
		ip6tables(cmd...)
	}
	before4, before6 := iptables("-S"), ip6tables("-S")
	ns := nstest.NewNS(t, "dku6-ns")
	cfg := nat.Config{HostNS: w.Host, Prefix6: netip.MustParsePrefix("fd00:d6::/64")}
	// With DockerUser for IPv4 only in mind, the ip6 chain is named.
	if _, err := (nat.Config{HostNS: w.Host}).Connect(ns, "up0", netip.MustParsePrefix("fd00:d6::/64")); !errors.Is(err, nat.ErrForeignDrop) ||
		!strings.Contains(err.Error(), "ip6 filter FORWARD") || !strings.Contains(err.Error(), "DockerUser") {
		t.Fatalf("an IPv6 link on a Docker host: %v, want ErrForeignDrop naming ip6 filter FORWARD and DockerUser", err)
	}
	cfg.DockerUser = true
	l, err := cfg.Connect(ns, "up0", netip.MustParsePrefix("10.31.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	for name, rules := range map[string]string{"iptables": iptables("-S", "DOCKER-USER"), "ip6tables": ip6tables("-S", "DOCKER-USER")} {
		for _, dir := range []string{"-i", "-o"} {
			re := fmt.Sprintf(`(?m)^-A DOCKER-USER %s %s -m comment --comment "nsnet owner=\w+ pid=\d+ link=%s index=\d+" -j ACCEPT$`, dir, l.HostVeth, l.HostVeth)
			if !regexp.MustCompile(re).MatchString(rules) {
				t.Errorf("%s: no %s rule:\n%s", name, dir, rules)
			}
		}
	}
	if !nstest.Ping(t, "dku6-ns", "2001:db8::1") || !nstest.Ping(t, "dku6-ns", "203.0.113.1") {
		t.Error("no traffic through Docker's FORWARD chains")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if after := ip6tables("-S"); after != before6 {
		t.Errorf("Docker's ip6 table after Close:\n%s", lineDiff(before6, after))
	}
	if after := iptables("-S"); after != before4 {
		t.Errorf("Docker's ip table after Close:\n%s", lineDiff(before4, after))
	}
}

// nsnetRules counts nsnet's rules in DOCKER-USER, as iptables lists them.
func nsnetRules(iptables func(args ...string) string) int {
	return strings.Count(iptables("-S", "DOCKER-USER"), "nsnet owner=")
}

// waitFor polls cond for up to 2 s (the guard looks every 20 ms).
func waitFor(cond func() bool) bool {
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestDockerUserRoundTrip: after "iptables-save | iptables-restore" (what
// Docker, firewall tools and admins run), iptables-nft writes nsnet's
// comments back as xt comment matches, not rule userdata: nsnet still
// knows its rules (the guard adds no second pair), Close removes them, and
// Sweep those of a killed process.
func TestDockerUserRoundTrip(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "dkr-")
	iptables := dockerHost(t, w)
	before := iptables("-S")
	roundTrip := func() {
		nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "sh", "-c", "iptables-nft-save | iptables-nft-restore")
	}
	ns := nstest.NewNS(t, "dkr-ns")
	l, err := nat.Config{HostNS: w.Host, DockerUser: true}.Connect(ns, "up0", netip.MustParsePrefix("10.31.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip()
	time.Sleep(200 * time.Millisecond) // (ten looks of the guard)
	if n := nsnetRules(iptables); n != 2 {
		t.Errorf("%d nsnet rules in DOCKER-USER after a round trip, want 2:\n%s", n, iptables("-S", "DOCKER-USER"))
	}
	if !nstest.Ping(t, "dkr-ns", "203.0.113.1") {
		t.Error("no traffic after the round trip")
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if after := iptables("-S"); after != before {
		t.Errorf("Docker's table after Close:\n%s", lineDiff(before, after))
	}
	killedChild(t, w, "dkr-ns2", "10.31.2.0/24", "", "NSNET_HELPER_DOCKERUSER=1")
	roundTrip()
	if res, err := nat.Sweep(w.Host); err != nil || res.DockerUser != 2 {
		t.Errorf("Sweep after a round trip: %+v, %v; want 2 DOCKER-USER rules", res, err)
	}
	if after := iptables("-S"); after != before {
		t.Errorf("Docker's table after Sweep:\n%s", lineDiff(before, after))
	}
}

// TestDockerUserChainAfterLink: a link with DockerUser made before Docker
// started (no DOCKER-USER yet) gets its rules when Docker makes the
// chain, so Docker's drop policy does not kill its traffic; Close removes
// them.
func TestDockerUserChainAfterLink(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "dka-")
	ns := nstest.NewNS(t, "dka-ns")
	l, err := nat.Config{HostNS: w.Host, DockerUser: true}.Connect(ns, "up0", netip.MustParsePrefix("10.32.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	iptables := dockerHost(t, w) // Docker starts
	if !waitFor(func() bool { return nsnetRules(iptables) == 2 }) {
		t.Fatalf("no rules in DOCKER-USER after Docker made it:\n%s", iptables("-S", "DOCKER-USER"))
	}
	if !nstest.Ping(t, "dka-ns", "203.0.113.1") {
		t.Error("no traffic through Docker's FORWARD chain")
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if n := nsnetRules(iptables); n != 0 {
		t.Errorf("%d nsnet rules left in DOCKER-USER", n)
	}
}

// TestForwardingTurnedOnByOther: when someone turns IPv4 forwarding on for
// every interface (Docker starting after nsnet sets net.ipv4.ip_forward=1)
// while nsnet has the uplink's forwarding on for its links only, nsnet
// withdraws its drop of everything else arriving at the uplink (it would
// cut Docker's containers and ports off), and Close leaves forwarding on;
// in the other order (forwarding on first) there is no drop at all.
func TestForwardingTurnedOnByOther(t *testing.T) {
	requireTools(t)
	for _, order := range []string{"nsnet first", "other first"} {
		t.Run(order, func(t *testing.T) {
			w := nstest.NewWorld(t, "fwo-")
			host := func(args ...string) string {
				return nstest.Cmd(t, "ip", append([]string{"netns", "exec", w.HostName}, args...)...)
			}
			// Another network of the host, not nsnet's (a Docker bridge,
			// say): the outside reaches 192.0.2.2 through the host.
			other := nstest.NewNS(t, "fwo-other")
			if err := veth.Create(w.Host, veth.Config{Name: "fwo-br", PeerName: "eth0", PeerNS: other}); err != nil {
				t.Fatal(err)
			}
			host("ip", "addr", "add", "192.0.2.1/24", "dev", "fwo-br")
			host("ip", "link", "set", "fwo-br", "up")
			nstest.Cmd(t, "ip", "-n", "fwo-other", "addr", "add", "192.0.2.2/24", "dev", "eth0")
			nstest.Cmd(t, "ip", "-n", "fwo-other", "link", "set", "eth0", "up")
			nstest.Cmd(t, "ip", "-n", "fwo-other", "route", "add", "default", "via", "192.0.2.1")
			nstest.Cmd(t, "ip", "-n", w.InetName, "route", "add", "192.0.2.0/24", "via", "203.0.113.2")
			dockerStarts := func() { host("sysctl", "-qw", "net.ipv4.ip_forward=1") }
			if order == "other first" {
				dockerStarts()
			}
			ns := nstest.NewNS(t, "fwo-ns")
			l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix("10.33.1.0/24"))
			if err != nil {
				t.Fatal(err)
			}
			if order == "nsnet first" {
				if nstest.Ping(t, w.InetName, "192.0.2.2") {
					t.Fatal("control: the host forwarded to another network while only nsnet's links were opened")
				}
				dockerStarts()
			}
			if !waitFor(func() bool { return nstest.Ping(t, w.InetName, "192.0.2.2") }) {
				t.Errorf("the host does not forward to its other network after ip_forward=1:\n%s", host("nft", "list", "set", "inet", "nsnet", "opened"))
			}
			if !nstest.Ping(t, "fwo-ns", "203.0.113.1") {
				t.Error("the link lost its traffic")
			}
			if err := l.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if got := host("sh", "-c", "cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/up0/forwarding"); got != "1\n1\n" {
				t.Errorf("after Close, ip_forward and up0's forwarding: %q, want both on", got)
			}
			if !nstest.Ping(t, w.InetName, "192.0.2.2") {
				t.Error("after Close the host no longer forwards to its other network")
			}
		})
	}
}
