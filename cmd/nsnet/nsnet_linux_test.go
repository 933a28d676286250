package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nat/network"
	"github.com/nsnet/nsnet/nstest"
)

func TestMain(m *testing.M) {
	if os.Getenv("NSNET_CLI_HELPER") == "serve" {
		serve() // the command nsnet run runs in TestRun
		return
	}
	nstest.Main(m)
}

// serve answers each TCP connection on :80 with "hello from ADDR", ADDR
// the peer's address as seen in the namespace, and prints "listening".
func serve() {
	l, err := net.Listen("tcp", ":80")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("listening")
	for {
		c, err := l.Accept()
		if err != nil {
			os.Exit(1)
		}
		fmt.Fprintf(c, "hello from %s\n", c.RemoteAddr().(*net.TCPAddr).IP)
		c.Close()
	}
}

// world is a private world's host namespace with uplink up0 and the
// outside host 203.0.113.1, and nsnet built for it.
type world struct {
	*nstest.World
	bin string
}

func newWorld(t *testing.T, prefix string) world {
	nstest.Require(t)
	for _, c := range []string{"ip", "nft", "ping", "go", "nsenter"} {
		nstest.RequireCmd(t, c)
	}
	w := nstest.NewWorld(t, prefix)
	bin := filepath.Join(t.TempDir(), "nsnet")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return world{w, bin}
}

// cmd is nsnet with args, run in the world's host namespace as from a
// shell there: by nsenter, in the test's mount namespace (netns.Start
// would give it one of its own, and the named namespaces it makes would
// stay in there).
func (w world) cmd(args ...string) *exec.Cmd {
	c := exec.Command("nsenter", append([]string{"--net=/run/netns/" + w.HostName, "--", w.bin}, args...)...)
	c.Env = append(os.Environ(), "NSNET_PRIVATE=")
	return c
}

// run runs nsnet in the world's host and returns its output and status.
func (w world) run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	c := w.cmd(args...)
	var out strings.Builder
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	code, err := exitCode(err)
	if err != nil {
		t.Fatalf("nsnet %v: %v", args, err)
	}
	return out.String(), code
}

// ls is nsnet ls -json.
func (w world) ls(t *testing.T) (out struct {
	Links      []jsonLink
	Members    []jsonMember
	Namespaces []runNS
}) {
	t.Helper()
	s, code := w.run(t, "ls", "-json")
	if code != 0 {
		t.Fatalf("nsnet ls -json: status %d\n%s", code, s)
	}
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Fatalf("nsnet ls -json: %v\n%s", err, s)
	}
	return out
}

// hostState is what must be as before once a run is over or swept: the
// host's links, addresses, nftables ruleset, the uplink's forwarding and
// the namespaces' and their files' directories.
func (w world) hostState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"-br", "link"}, {"-br", "addr"}} {
		b.WriteString(nstest.Cmd(t, "ip", append([]string{"-n", w.HostName}, args...)...))
	}
	b.WriteString(nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "nft", "list", "ruleset"))
	b.WriteString(nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "sh", "-c",
		"cat /proc/sys/net/ipv4/conf/up0/forwarding /proc/sys/net/ipv6/conf/up0/force_forwarding 2>/dev/null; true"))
	for _, dir := range []string{"/run/netns", "/etc/netns", "/run/netns-etc"} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), w.HostName[:4]) && !strings.HasPrefix(e.Name(), w.InetName) && e.Name() != w.HostName {
				fmt.Fprintf(&b, "%s/%s\n", dir, e.Name())
			}
		}
	}
	return b.String()
}

// processes lists the processes whose command line contains marker.
func processes(marker string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), marker) {
			out = append(out, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

// TestRun: traffic out (ping the outside host, masqueraded), a published
// port reached from outside, the exit status passed on, and nothing left
// after the run.
func TestRun(t *testing.T) {
	w := newWorld(t, "clir-")
	before := w.hostState(t)
	if out, code := w.run(t, "run", "-uplink", "up0", "-dns", "203.0.113.1", "--", "ping", "-c1", "-W2", "203.0.113.1"); code != 0 {
		t.Fatalf("nsnet run ping: status %d\n%s", code, out)
	}
	if out, code := w.run(t, "run", "-uplink", "up0", "-dns", "203.0.113.1", "--", "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("nsnet run sh -c 'exit 7': status %d, want 7\n%s", code, out)
	}

	exe, _ := os.Executable()
	c := w.cmd("run", "-uplink", "up0", "-dns", "203.0.113.1", "-p", "8080:80", "-p", "203.0.113.2:8081:80/tcp", "--", exe)
	c.Env = append(c.Env, "NSNET_CLI_HELPER=serve")
	stdout, _ := c.StdoutPipe()
	c.Stderr = os.Stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "listening" {
		t.Fatalf("the served command said %q", lines.Text())
	}
	go io.Copy(io.Discard, stdout)
	for _, port := range []string{"8080", "8081"} {
		got := dialFrom(t, w, "203.0.113.2:"+port)
		if got != "hello from 203.0.113.1" {
			t.Errorf("port %s from outside: %q, want hello from 203.0.113.1", port, got)
		}
	}
	ls := w.ls(t)
	// Three ports: 8080 on the uplink's address and on 127.0.0.1 (no
	// address given), 8081 on the address given.
	if len(ls.Links) != 1 || ls.Links[0].State != "alive" || len(ls.Links[0].Ports) != 3 || ls.Links[0].Uplink != "up0" ||
		len(ls.Links[0].Prefixes) != 1 || !nat.DefaultPool.Contains(netip.MustParsePrefix(ls.Links[0].Prefixes[0]).Addr()) {
		t.Errorf("nsnet ls while serving: %+v", ls)
	}
	c.Process.Signal(syscall.SIGTERM) // passed on: the server dies of it
	code, _ := exitCode(c.Wait())
	if code != 128+int(syscall.SIGTERM) {
		t.Errorf("status after SIGTERM %d, want %d", code, 128+int(syscall.SIGTERM))
	}
	if after := w.hostState(t); after != before {
		t.Errorf("host after the runs:\n%s\nbefore:\n%s", after, before)
	}
}

// TestLsPersistent: a persistent link (a CNI plugin's) is listed as
// such, with its tag and named namespace, and sweep leaves it alone.
func TestLsPersistent(t *testing.T) {
	w := newWorld(t, "clip-")
	ns := nstest.NewNS(t, "clip-ns")
	l, err := nat.Config{HostNS: w.Host, Persistent: true, Tag: "container-1", DNS: nat.DNSNone}.Connect(ns, "up0", netip.MustParsePrefix("10.9.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer nat.Remove(w.Host, l.HostVeth)
	if out, code := w.run(t, "sweep"); code != 0 || !strings.Contains(out, "0 links") {
		t.Errorf("nsnet sweep: status %d\n%s", code, out)
	}
	ls := w.ls(t)
	if len(ls.Links) != 1 || ls.Links[0].State != "persistent" || !ls.Links[0].Persistent || ls.Links[0].Tag != "container-1" ||
		ls.Links[0].Namespace != "clip-ns" || ls.Links[0].HostVeth != l.HostVeth || ls.Links[0].Prefixes[0] != "10.9.0.0/24" {
		t.Errorf("nsnet ls: %+v", ls)
	}
	out, _ := w.run(t, "ls")
	if !strings.Contains(out, "HOST END") || !strings.Contains(out, l.HostVeth) || !strings.Contains(out, "container-1") {
		t.Errorf("nsnet ls:\n%s", out)
	}
}

// TestLsNetwork: a network's bridge is listed as a link "(network)", its
// members after the links with their names, namespaces and addresses.
func TestLsNetwork(t *testing.T) {
	w := newWorld(t, "clin-")
	n, err := network.Create(network.Config{HostNS: w.Host, Uplink: "up0", Prefix: netip.MustParsePrefix("10.9.1.0/24"), NoDNS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ns := nstest.NewNS(t, "clin-ns")
	m, err := n.Attach(ns, network.MemberConfig{Name: "Web"})
	if err != nil {
		t.Fatal(err)
	}
	ls := w.ls(t)
	if len(ls.Links) != 1 || !ls.Links[0].Network || ls.Links[0].HostVeth != n.Bridge || ls.Links[0].State != "alive" {
		t.Errorf("nsnet ls links: %+v", ls.Links)
	}
	want := jsonMember{Network: n.Bridge, HostVeth: m.HostVeth, Index: ls.Members[0].Index, Name: "web", Namespace: "clin-ns",
		Addrs: []string{"10.9.1.2"}, MAC: m.MAC.String()}
	if len(ls.Members) != 1 || fmt.Sprint(ls.Members[0]) != fmt.Sprint(want) {
		t.Errorf("nsnet ls members: %+v, want %+v", ls.Members, want)
	}
	out, _ := w.run(t, "ls")
	if !strings.Contains(out, "(network)") || !strings.Contains(out, m.HostVeth) || !strings.Contains(out, "10.9.1.2") {
		t.Errorf("nsnet ls:\n%s", out)
	}
}

// dialFrom connects from the outside host to addr and returns the line
// it reads.
func dialFrom(t *testing.T, w world, addr string) string {
	t.Helper()
	c, err := w.Inet.Dial("tcp", addr)
	if err != nil {
		t.Errorf("dial %s from outside: %v", addr, err)
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

// TestKilledRun: nsnet run killed with SIGKILL leaves no process behind
// at once (the command and what it started in the background die with
// it); ls shows its link and named namespace dead; then sweep, or the
// next run, removes everything else: the host is as before.
func TestKilledRun(t *testing.T) {
	w := newWorld(t, "clik-")
	before := w.hostState(t)
	for _, then := range []string{"sweep", "next run"} {
		t.Run(then, func(t *testing.T) {
			marker := fmt.Sprintf("sleep %d", 3000+len(then))
			c := w.cmd("run", "-name", "clik-box", "-uplink", "up0", "-dns", "203.0.113.1", "-p", "8082:80", "--",
				"sh", "-c", marker+" & "+marker+" & wait")
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for len(processes(marker)) < 2 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if ls := w.ls(t); len(ls.Links) != 1 || ls.Links[0].State != "alive" || ls.Links[0].Namespace != "clik-box" ||
				len(ls.Namespaces) != 1 || ls.Namespaces[0].State != "alive" {
				t.Errorf("nsnet ls while running: %+v", ls)
			}
			c.Process.Kill()
			c.Wait()
			for deadline := time.Now().Add(2 * time.Second); len(processes(marker)) > 0 && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			if left := processes(marker); len(left) > 0 {
				t.Errorf("processes left after SIGKILL: %q", left)
			}
			ls := w.ls(t)
			if len(ls.Links) != 1 || ls.Links[0].State != "dead" || len(ls.Namespaces) != 1 || ls.Namespaces[0].State != "dead" {
				t.Errorf("nsnet ls after SIGKILL: %+v", ls)
			}
			if then == "sweep" {
				out, code := w.run(t, "sweep")
				if code != 0 || !strings.Contains(out, "removed link") || !strings.Contains(out, "removed namespace clik-box") {
					t.Errorf("nsnet sweep: status %d\n%s", code, out)
				}
			} else if out, code := w.run(t, "run", "-uplink", "up0", "-dns", "203.0.113.1", "--", "true"); code != 0 {
				t.Errorf("the next run: status %d\n%s", code, out)
			}
			if after := w.hostState(t); after != before {
				t.Errorf("host after %s:\n%s\nbefore:\n%s", then, after, before)
			}
		})
	}
}

// TestCommandLine: -h on every command (status 0, on stdout), version,
// and usage errors (status 2, nothing done).
func TestCommandLine(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "nsnet")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		nstest.MissingTool(t, "go build: %v\n%s", err, out)
	}
	run := func(args ...string) (string, string, int) {
		c := exec.Command(bin, args...)
		var o, e strings.Builder
		c.Stdout, c.Stderr = &o, &e
		code, err := exitCode(c.Run())
		if err != nil {
			t.Fatal(err)
		}
		return o.String(), e.String(), code
	}
	for _, c := range []string{"run", "ls", "sweep", "version"} {
		if o, _, code := run(c, "-h"); code != 0 || !strings.HasPrefix(o, "usage: nsnet "+c) {
			t.Errorf("nsnet %s -h: status %d, stdout %q", c, code, o)
		}
	}
	if o, _, code := run("-h"); code != 0 || !strings.Contains(o, "Commands:") {
		t.Errorf("nsnet -h: status %d, stdout %q", code, o)
	}
	if o, _, code := run("version"); code != 0 || !strings.HasPrefix(o, "nsnet ") || !strings.Contains(o, "go1.") {
		t.Errorf("nsnet version: status %d, %q", code, o)
	}
	for _, args := range [][]string{{}, {"frobnicate"}, {"run"}, {"run", "-p", "80:x", "--", "true"}, {"run", "-p", "1:2:3:4", "--", "true"},
		{"run", "-p", "80/sctp", "--", "true"}, {"run", "-cidr", "10.0.0.0", "--", "true"}, {"run", "-name", "a/b", "--", "true"},
		{"ls", "extra"}, {"sweep", "-x"}} {
		if _, e, code := run(args...); code != 2 || e == "" {
			t.Errorf("nsnet %q: status %d, stderr %q; want 2 and a message", args, code, e)
		}
	}
}

func TestPortFlags(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"8080:80", "tcp *:8080->80"},
		{"127.0.0.1:8081:80/udp", "udp 127.0.0.1:8081->80"},
		{"[2001:db8::2]:8443:443", "tcp 2001:db8::2:8443->443"},
		{"53/UDP", "udp *:53->53"},
		{"9000-9002:9000", "tcp *:9000->9000+3"},
	} {
		var p portFlags
		if err := p.Set(c.in); err != nil || len(p) != 1 || p[0].String() != c.want {
			t.Errorf("-p %s: %v, %v; want %s", c.in, p, err, c.want)
		}
	}
	for _, bad := range []string{"", "x", "0:80", "70000:80", "80:0", "1.2.3:80:80", "[::1:80:80", "9002-9000:80", "80/icmp", "a:b:c:d"} {
		var p portFlags
		if err := p.Set(bad); err == nil {
			t.Errorf("-p %q accepted: %v", bad, p)
		}
	}
}
