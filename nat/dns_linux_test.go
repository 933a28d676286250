package nat_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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

// bindOver binds a file with text over path (in the test's private mount
// namespace) for the rest of t.
func bindOver(t testing.TB, path, text string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(f, path, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(path, syscall.MNT_DETACH) })
}

// loopbackResolver makes resolver (a loopback address) the host's only
// name server for the rest of t, in its resolv.conf, and serves names
// there in the world's host namespace.
func loopbackResolver(t testing.TB, w *nstest.World, resolver netip.Addr, names map[string]netip.Addr) *nstest.DNSServer {
	t.Helper()
	bindOver(t, "/etc/resolv.conf", "nameserver "+resolver.String()+"\n")
	s, err := nstest.ServeDNS(w.Host, netip.AddrPortFrom(resolver, 53).String(), names)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// outsideWeb gives the world's outside host a web server on port 80
// answering "hello from outside".
func outsideWeb(t *testing.T, w *nstest.World) {
	t.Helper()
	l, err := w.Inet.Listen("tcp", "203.0.113.1:80")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		io.WriteString(rw, "hello from outside")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// TestDNSOnEveryHost: on each kind of host, a name that the outside
// host's name server knows (www.test) resolves inside a connected
// namespace and its web page comes back through the link: with getent and
// curl started by Run, with "ip netns exec", and with a Go http.Client
// dialling through the namespace, while the host itself cannot reach
// that server. Close removes the resolv.conf it wrote.
func TestDNSOnEveryHost(t *testing.T) {
	requireTools(t)
	for _, c := range []string{"getent", "curl"} {
		nstest.RequireCmd(t, c)
	}
	for _, host := range []struct {
		name     string
		conf     string // the host's /etc/resolv.conf
		resolved string // systemd-resolved's upstream file, "" for none
		local    bool   // a resolver on the host's 127.0.0.1:53 (dnsmasq, unbound)
		want     string // the namespace's name server
	}{
		{"systemd-resolved stub", "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch test\n", "nameserver 203.0.113.1\nsearch test\n", false, "203.0.113.1"},
		{"plain servers", "nameserver 127.0.0.1\nnameserver 203.0.113.1\n", "", false, "203.0.113.1"},
		{"resolver on loopback only", "nameserver 127.0.0.1\n", "", true, "10.33.0.1"},
	} {
		t.Run(host.name, func(t *testing.T) {
			nstest.CheckLeaks(t)
			w := nstest.NewWorld(t, "dns-")
			bindOver(t, "/etc/resolv.conf", host.conf)
			privateDirs(t, false, "/run/systemd")
			if host.resolved != "" {
				os.MkdirAll("/run/systemd/resolve", 0o755)
				os.WriteFile("/run/systemd/resolve/resolv.conf", []byte(host.resolved), 0o644)
			}
			names := map[string]netip.Addr{"www.test": netip.MustParseAddr("203.0.113.1")}
			outside, err := nstest.ServeDNS(w.Inet, "203.0.113.1:53", names)
			if err != nil {
				t.Fatal(err)
			}
			defer outside.Close()
			if host.local {
				// The host's own resolver, on its loopback only.
				local, err := nstest.ServeDNS(w.Host, "127.0.0.1:53", names)
				if err != nil {
					t.Fatal(err)
				}
				defer local.Close()
			}
			outsideWeb(t, w)
			ns := nstest.NewNS(t, "dns-ns")
			l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix("10.33.0.0/24"))
			if err != nil {
				t.Fatal(err)
			}
			written, err := os.ReadFile("/etc/netns/dns-ns/resolv.conf")
			if err != nil || !strings.Contains(string(written), "nameserver "+host.want+"\n") {
				t.Fatalf("the namespace's resolv.conf: %q, %v; want nameserver %s", written, err, host.want)
			}

			run := func(name string, args ...string) string {
				t.Helper()
				out, err := exec.Command("ip", append([]string{"netns", "exec", "dns-ns", name}, args...)...).Output()
				viaIP := string(out)
				if err != nil {
					t.Errorf("ip netns exec dns-ns %s: %v", name, err)
				}
				var b strings.Builder
				cmd := exec.Command(name, args...)
				cmd.Stdout = &b
				if err := ns.Run(cmd); err != nil {
					t.Errorf("Run %s: %v", name, err)
				}
				if b.String() != viaIP {
					t.Errorf("%s: Run says %q, ip netns exec %q", name, b.String(), viaIP)
				}
				return b.String()
			}
			if out := run("getent", "hosts", "www.test"); !strings.HasPrefix(out, "203.0.113.1 ") {
				t.Errorf("getent hosts www.test: %q", out)
			}
			if out := run("curl", "-sS", "--max-time", "5", "http://www.test/"); out != "hello from outside" {
				t.Errorf("curl http://www.test/: %q", out)
			}

			client := &http.Client{Transport: &http.Transport{DialContext: ns.DialContext}, Timeout: 5 * time.Second}
			if body, err := get(client, "http://www.test/"); err != nil || body != "hello from outside" {
				t.Errorf("Go http.Client through the namespace: %q, %v", body, err)
			}
			client.CloseIdleConnections()
			direct := &http.Client{Timeout: time.Second}
			if _, err := get(direct, "http://203.0.113.1/"); err == nil {
				t.Error("the host reaches the outside web server itself: the test proves nothing")
			}

			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat("/etc/netns/dns-ns"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("after Close, /etc/netns/dns-ns: %v", err)
			}
		})
	}
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestDNSModes: explicit servers and none; a host with no resolv.conf
// gets none written (the documented outcome: names do not resolve); a
// resolv.conf the user put in the namespace's directory is kept; the
// relay answers only the link's prefix and stops at Close.
func TestDNSModes(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "dnm-")
	bindOver(t, "/etc/resolv.conf", "nameserver 127.0.0.1\nsearch example.org\n")
	ns, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	conf := filepath.Join(netns.EtcDir(ns), "resolv.conf")
	p := netip.MustParsePrefix("10.34.0.0/24")
	connect := func(cfg nat.Config) *nat.Link {
		t.Helper()
		cfg.HostNS = w.Host
		l, err := cfg.Connect(ns, "up0", p)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	l := connect(nat.Config{DNS: nat.DNSServers, DNSServers: []netip.Addr{netip.MustParseAddr("192.0.2.53")}})
	if b, _ := os.ReadFile(conf); !strings.Contains(string(b), "nameserver 192.0.2.53\nsearch example.org\n") {
		t.Errorf("DNSServers wrote %q", b)
	}
	l.Close()
	if _, err := (nat.Config{HostNS: w.Host, DNS: nat.DNSServers}).Connect(ns, "up0", p); !errors.Is(err, nat.ErrInvalidConfig) {
		t.Errorf("DNSServers with no servers: %v", err)
	}

	l = connect(nat.Config{DNS: nat.DNSNone})
	if _, err := os.Stat(conf); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("DNSNone wrote a resolv.conf: %v", err)
	}
	l.Close()

	nat.SetHostResolvConf("/nonexistent/resolv.conf")
	l = connect(nat.Config{})
	nat.SetHostResolvConf("")
	if _, err := os.Stat(conf); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a host without resolv.conf: one was written: %v", err)
	}
	l.Close()

	os.MkdirAll(filepath.Dir(conf), 0o755)
	os.WriteFile(conf, []byte("nameserver 198.51.100.53\n"), 0o644)
	l = connect(nat.Config{})
	l.Close()
	if b, _ := os.ReadFile(conf); string(b) != "nameserver 198.51.100.53\n" {
		t.Errorf("the user's resolv.conf became %q", b)
	}
	os.RemoveAll(filepath.Dir(conf))

	// The relay: only for the link's prefix, and gone after Close.
	local, err := nstest.ServeDNS(w.Host, "127.0.0.1:53", map[string]netip.Addr{"www.test": netip.MustParseAddr("203.0.113.1")})
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	l = connect(nat.Config{DNS: nat.DNSRelay})
	r := ns.Resolver()
	if a, err := r.LookupNetIP(context.Background(), "ip4", "www.test"); err != nil || len(a) != 1 || a[0] != netip.MustParseAddr("203.0.113.1") {
		t.Errorf("through the relay: %v, %v", a, err)
	}
	// Over TCP too: a length-prefixed query, its answer back.
	if tc, err := ns.Dial("tcp", "10.34.0.1:53"); err != nil {
		t.Errorf("TCP to the relay: %v", err)
	} else {
		q := query()
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		tc.Write(append([]byte{0, byte(len(q))}, q...))
		var hdr [2]byte
		_, err := io.ReadFull(tc, hdr[:])
		a := make([]byte, int(hdr[0])<<8|int(hdr[1]))
		if err == nil {
			_, err = io.ReadFull(tc, a)
		}
		if err != nil || len(a) < 12 || a[0] != 0x12 || a[1] != 0x34 || a[7] != 1 {
			t.Errorf("TCP answer through the relay: % x, %v", a, err)
		}
		tc.Close()
	}
	other := nstest.NewNS(t, "dnm-other")
	lo, err := nat.Config{HostNS: w.Host, DNS: nat.DNSNone}.Connect(other, "up0", netip.MustParsePrefix("10.35.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer lo.Close()
	before := local.Queries()
	c, err := other.Dial("udp", "10.34.0.1:53")
	if err == nil {
		c.Write(query())
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, _ := c.Read(make([]byte, 512)); n > 0 || local.Queries() != before {
			t.Error("the relay answered a namespace outside its link's prefix")
		}
		c.Close()
	}
	l.Close()
	if _, err := r.LookupNetIP(context.Background(), "ip4", "www.test"); err == nil {
		t.Error("the relay still answers after Close")
	}

	// A read-only configuration directory (a read-only /etc, as in many
	// containers): DNSAuto goes on without a resolv.conf, explicit servers
	// fail saying why.
	if err := syscall.Mount("", netns.AnonEtcRoot, "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	defer syscall.Mount("", netns.AnonEtcRoot, "", syscall.MS_REMOUNT, "")
	l = connect(nat.Config{})
	if _, err := os.Stat(conf); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("read-only: a resolv.conf appeared: %v", err)
	}
	l.Close()
	if _, err := (nat.Config{HostNS: w.Host, DNS: nat.DNSServers, DNSServers: []netip.Addr{netip.MustParseAddr("192.0.2.53")}}).Connect(ns, "up0", p); !errors.Is(err, syscall.EROFS) {
		t.Errorf("read-only, explicit servers: %v, want EROFS", err)
	}
}

// query is a DNS query for www.test, type A.
func query() []byte {
	return []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'w', 'w', 'w', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1}
}

// TestIPv6DNS: an IPv6-only link is given only the host's IPv6 name
// servers (an IPv4 one it could not reach), and where the host has only a
// loopback resolver, a relay on the host end's IPv6 address that answers
// it; a dual-stack link keeps both families' servers.
func TestIPv6DNS(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "dn6-")
	ns, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	conf := filepath.Join(netns.EtcDir(ns), "resolv.conf")
	connect := func(cidr string, cfg nat.Config) *nat.Link {
		t.Helper()
		cfg.HostNS = w.Host
		l, err := cfg.Connect(ns, "up0", netip.MustParsePrefix(cidr))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	bindOver(t, "/etc/resolv.conf", "nameserver 192.0.2.53\nnameserver 2001:db8:53::53\n")
	l := connect("fd00:d6::/64", nat.Config{})
	if b, _ := os.ReadFile(conf); !strings.Contains(string(b), "nameserver 2001:db8:53::53\n") || strings.Contains(string(b), "192.0.2.53") {
		t.Errorf("IPv6-only link got %q", b)
	}
	l.Close()
	l = connect("10.36.0.0/24", nat.Config{Prefix6: netip.MustParsePrefix("fd00:d6::/64")})
	if b, _ := os.ReadFile(conf); !strings.Contains(string(b), "nameserver 192.0.2.53\nnameserver 2001:db8:53::53\n") {
		t.Errorf("dual-stack link got %q", b)
	}
	l.Close()

	loopbackResolver(t, w, netip.MustParseAddr("127.0.0.1"), map[string]netip.Addr{"www.test": netip.MustParseAddr("2001:db8::1")})
	l = connect("fd00:d6::/64", nat.Config{})
	defer l.Close()
	if b, _ := os.ReadFile(conf); !strings.Contains(string(b), "nameserver fd00:d6::1\n") {
		t.Errorf("IPv6-only link with a loopback resolver got %q", b)
	}
	if a, err := ns.Resolver().LookupNetIP(context.Background(), "ip6", "www.test"); err != nil || len(a) != 1 || a[0] != netip.MustParseAddr("2001:db8::1") {
		t.Errorf("through the IPv6 relay: %v, %v", a, err)
	}
}

// TestResolvConfKilledWhileWriting: a process killed at each step of
// writing a namespace's resolv.conf (whole but not yet in place; in place
// with its temporary name not yet removed) leaves no partial file: nothing,
// or the whole file. That holds where the namespace's directory is made
// with the file (a temporary directory moved into place) and where it is
// there already (the file made with O_TMPFILE, or through a named
// temporary file where a file system has no O_TMPFILE). Sweep then removes
// everything it left, and the next Connect of that namespace writes its
// own resolv.conf (an empty file left by a crash used to be taken for the
// user's own, and names stopped resolving there).
func TestResolvConfKilledWhileWriting(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "rck-")
	for i, c := range []struct {
		step         string
		dirThere     bool
		named        bool
		inRoot, inNS []string // left by the killed process: in /etc/netns (temporaries), in the namespace's directory
	}{
		{"resolv.conf written", false, false, []string{".nsnet-tmp-"}, nil},
		{"resolv.conf linked", false, false, nil, []string{"resolv.conf"}},
		{"resolv.conf written", true, false, nil, nil},
		{"resolv.conf linked", true, false, nil, []string{"resolv.conf"}},
		{"resolv.conf written", true, true, nil, []string{".nsnet-tmp-"}},
		{"resolv.conf linked", true, true, nil, []string{".nsnet-tmp-", "resolv.conf"}},
	} {
		name := fmt.Sprintf("%s, directory there %v, named temporary %v", c.step, c.dirThere, c.named)
		t.Run(name, func(t *testing.T) {
			nsName := fmt.Sprintf("rck-ns%d", i)
			dir := filepath.Join(netns.EtcRoot, nsName)
			if c.dirThere {
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				defer os.Remove(dir)
			}
			env := []string{"NSNET_HELPER_DNS=1"}
			if c.named {
				env = append(env, "NSNET_HELPER_NO_TMPFILE=1")
			}
			killedChild(t, w, nsName, fmt.Sprintf("10.61.%d.0/24", i), c.step, env...)
			left := func(d string, all bool) []string {
				var out []string
				ents, _ := os.ReadDir(d)
				for _, e := range ents {
					n := e.Name()
					if strings.HasPrefix(n, ".nsnet-tmp-") {
						n = ".nsnet-tmp-"
					} else if !all {
						continue
					}
					out = append(out, n)
					if e.IsDir() {
						continue
					}
					b, _ := os.ReadFile(filepath.Join(d, e.Name()))
					if !strings.HasPrefix(string(b), "# nsnet owner=") || !strings.Contains(string(b), "nameserver 203.0.113.1\n") {
						t.Errorf("%s: a partial file: %q", e.Name(), b)
					}
				}
				return out
			}
			if got := left(netns.EtcRoot, false); strings.Join(got, " ") != strings.Join(c.inRoot, " ") {
				t.Errorf("left in %s: %q, want %q", netns.EtcRoot, got, c.inRoot)
			}
			if got := left(dir, true); strings.Join(got, " ") != strings.Join(c.inNS, " ") {
				t.Errorf("left in %s: %q, want %q", dir, got, c.inNS)
			}
			if _, err := nat.Sweep(w.Host); err != nil {
				t.Fatal(err)
			}
			if got := append(left(netns.EtcRoot, false), left(dir, true)...); len(got) > 0 {
				t.Errorf("after Sweep: %q", got)
			}
			ns, err := netns.Open(nsName)
			if err != nil {
				t.Fatal(err)
			}
			defer ns.Close()
			l, err := nat.Config{HostNS: w.Host, DNS: nat.DNSServers, DNSServers: []netip.Addr{w.Outside}}.Connect(ns, "up0", netip.MustParsePrefix(fmt.Sprintf("10.61.%d.0/24", i)))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if b, err := os.ReadFile(filepath.Join(dir, "resolv.conf")); err != nil || !strings.Contains(string(b), "nameserver 203.0.113.1") {
				t.Errorf("the next Connect's resolv.conf: %q, %v", b, err)
			}
		})
	}
}

// TestHelperFlood is not a test: the body of a process in a namespace that
// opens NSNET_FLOOD_N TCP connections to NSNET_FLOOD_ADDR, sending nothing,
// prints "opened N", then, a moment later, how many the other side still
// holds open ("open K"), and waits to be killed.
func TestHelperFlood(t *testing.T) {
	if os.Getenv("NSNET_HELPER") != "flood" {
		return
	}
	n, _ := strconv.Atoi(os.Getenv("NSNET_FLOOD_N"))
	var conns []net.Conn
	for range n {
		c, err := net.DialTimeout("tcp", os.Getenv("NSNET_FLOOD_ADDR"), 2*time.Second)
		if err != nil {
			continue
		}
		conns = append(conns, c)
	}
	fmt.Printf("opened %d\n", len(conns))
	// Connections still in the relay's accept queue look open from here
	// until it accepts and closes them: count until that has settled (the
	// same count three looks running; not merely 8 or fewer, which this
	// helper's share of the bound may be while the other helper's are still
	// queued).
	open, same := len(conns), 0
	for deadline := time.Now().Add(5 * time.Second); same < 3 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		n := 0
		for _, c := range conns {
			c.SetReadDeadline(time.Now().Add(time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
				n++ // (a closed one reads EOF or a reset)
			}
		}
		if n == open {
			same++
		} else {
			same = 0
		}
		open = n
	}
	fmt.Printf("open %d\n", open)
	select {}
}

// TestRelayFlood: code in a namespace that floods its DNS relay with TCP
// connections and says nothing (two processes, 900 connections each, to a
// resolver that waits for queries) cannot exhaust the program that
// connected it: the program's descriptors stay within the relay's bounds,
// connections over the bound are closed at once, the relay still answers
// over UDP, another link's relay too, and a new Connect works.
func TestRelayFlood(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "rfl-")
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(conf, []byte("nameserver 127.0.0.1\n"), 0o644)
	nat.SetHostResolvConf(conf)
	defer nat.SetHostResolvConf("")
	srv, err := nstest.ServeDNS(w.Host, "127.0.0.1:53", map[string]netip.Addr{"outside.test": w.Outside})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ns := nstest.NewNS(t, "rfl-ns")
	l, err := nat.Config{HostNS: w.Host, DNS: nat.DNSRelay}.Connect(ns, "up0", netip.MustParsePrefix("10.66.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fds := func() int { ents, _ := os.ReadDir("/proc/self/fd"); return len(ents) }
	before := fds()
	var outs []*bufio.Scanner
	for range 2 {
		cmd := nstest.Child("TestHelperFlood", "NSNET_HELPER=flood", "NSNET_FLOOD_N=900", "NSNET_FLOOD_ADDR=10.66.0.1:53")
		out, _ := cmd.StdoutPipe()
		if err := ns.Start(cmd); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		outs = append(outs, bufio.NewScanner(out))
	}
	open := 0
	for i, s := range outs {
		for _, want := range []string{"opened", "open"} {
			if !s.Scan() || !strings.HasPrefix(s.Text(), want+" ") {
				t.Fatalf("helper %d said %q, want %q", i, s.Text(), want)
			}
			if want == "open" {
				n, _ := strconv.Atoi(strings.Fields(s.Text())[1])
				open += n
			}
		}
	}
	// Per client address 8 (both helpers share the namespace's address);
	// each costs the program two descriptors, and the test's own resolver
	// a third.
	if open > 8 {
		t.Errorf("%d of 1,800 flood connections held open, want at most 8", open)
	}
	if during := fds(); during > before+3*8+16 {
		t.Errorf("descriptors: %d before the flood, %d during it", before, during)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if addrs, err := ns.Resolver().LookupHost(ctx, "outside.test"); err != nil || len(addrs) == 0 || addrs[0] != "203.0.113.1" {
		t.Errorf("the flooded link's relay over UDP: %v, %v", addrs, err)
	}
	ns2 := nstest.NewNS(t, "rfl-ns2")
	l2, err := nat.Config{HostNS: w.Host, DNS: nat.DNSRelay}.Connect(ns2, "up0", netip.MustParsePrefix("10.67.0.0/24"))
	if err != nil {
		t.Fatalf("Connect during the flood: %v", err)
	}
	defer l2.Close()
	if addrs, err := ns2.Resolver().LookupHost(ctx, "outside.test"); err != nil || len(addrs) == 0 {
		t.Errorf("another link's relay during the flood: %v, %v", addrs, err)
	}
}
