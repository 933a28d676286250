package nat_test

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nstest"
)

// realDocker is a dockerd running in a world's host namespace, with its
// state on private tmpfs mounts, its socket at /run/docker/docker.sock.
type realDocker struct {
	t    *testing.T
	w    *nstest.World
	cmd  *exec.Cmd
	done chan struct{} // closed once dockerd has exited
}

// startDocker starts dockerd (Debian's docker.io) in w's host namespace,
// as the host's init would, and waits until it answers. Its data and
// runtime directories are tmpfs mounts of the test's own mount namespace
// (privateDirs): nothing of it reaches the machine's.
func startDocker(t *testing.T, w *nstest.World) *realDocker {
	t.Helper()
	d := &realDocker{t: t, w: w}
	d.start()
	t.Cleanup(d.stop)
	return d
}

func (d *realDocker) start() {
	d.t.Helper()
	// nsenter, not ip netns exec, which mounts a sysfs of the namespace
	// over /sys and hides the cgroup mounts dockerd needs.
	d.cmd = exec.Command("nsenter", "--net=/run/netns/"+d.w.HostName, "dockerd", "--storage-driver", "vfs",
		"-H", "unix:///run/docker/docker.sock", "--pidfile", "/run/docker/docker.pid", "--group", "root")
	log, _ := os.Create(filepath.Join(d.t.TempDir(), "dockerd.log"))
	d.cmd.Stdout, d.cmd.Stderr = log, log
	// Killed if the test process dies. Pdeathsig fires when the thread
	// that forked the child ends, and the Go runtime ends threads (one a
	// goroutine locked and left): the start and the wait run on a thread
	// of their own, locked until dockerd has exited.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	d.done = make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		err := d.cmd.Start()
		started <- err
		if err == nil {
			d.cmd.Wait()
		}
		close(d.done)
	}()
	if err := <-started; err != nil {
		d.t.Fatal(err)
	}
	for i := 0; ; i++ {
		if _, err := d.docker("info"); err == nil {
			return
		}
		if i == 150 {
			b, _ := os.ReadFile(log.Name())
			d.t.Fatalf("dockerd did not start:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop stops dockerd as its init would (SIGTERM, then waits).
func (d *realDocker) stop() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
	d.cmd = nil
}

// docker runs the docker command against the daemon.
func (d *realDocker) docker(args ...string) (string, error) {
	return nstest.CmdErr("docker", append([]string{"-H", "unix:///run/docker/docker.sock"}, args...)...)
}

func (d *realDocker) must(args ...string) string {
	d.t.Helper()
	out, err := d.docker(args...)
	if err != nil {
		d.t.Fatalf("docker %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// testImage makes the image nsnet-test:1 from scratch: the static program
// of testdata/docker-srv, its command.
func (d *realDocker) testImage() {
	d.t.Helper()
	mod := d.t.TempDir()
	src, err := os.ReadFile("testdata/docker-srv/main.go.txt")
	if err != nil {
		d.t.Fatal(err)
	}
	os.WriteFile(filepath.Join(mod, "main.go"), src, 0o644)
	os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module srv\n\ngo 1.21\n"), 0o644)
	build := exec.Command("go", "build", "-o", "srv", ".")
	build.Dir, build.Env = mod, append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GOPROXY=off")
	if out, err := build.CombinedOutput(); err != nil {
		d.t.Fatalf("go build srv: %v\n%s", err, out)
	}
	bin, _ := os.ReadFile(filepath.Join(mod, "srv"))
	tarPath := filepath.Join(mod, "img.tar")
	f, _ := os.Create(tarPath)
	tw := tar.NewWriter(f)
	tw.WriteHeader(&tar.Header{Name: "srv", Mode: 0o755, Size: int64(len(bin))})
	tw.Write(bin)
	tw.Close()
	f.Close()
	d.must("import", "--change", `CMD ["/srv"]`, tarPath, "nsnet-test:1")
}

// greeter serves, on the outside host at addr, one line per connection.
func greeter(t *testing.T, w *nstest.World, addr string) {
	l, err := w.Inet.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello from the outside to %s\n", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
}

// lineFrom connects from ns to addr and returns the line it gets.
func lineFrom(dial func(network, addr string) (net.Conn, error), addr string) (string, error) {
	c, err := dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// saveDocker is Docker's ip filter table as iptables-save prints it,
// without its comment lines (a date) and its chains' counters (traffic).
func saveDocker(t *testing.T, w *nstest.World) string {
	out := nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "iptables-nft-save", "-t", "filter")
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "#") {
			keep = append(keep, counters.ReplaceAllString(l, "[-]"))
		}
	}
	return strings.Join(keep, "\n")
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// TestRealDocker runs nsnet beside a real dockerd (Debian's docker.io) in a
// private world, in both orders, with a container made from scratch:
//
//   - nsnet first: a link with DockerUser made before Docker starts gets
//     its rules when Docker makes DOCKER-USER; Docker turns ip_forward on,
//     and nsnet stops dropping what else arrives at the uplink, so
//     Docker's published port and its containers' traffic work.
//   - iptables-save | iptables-restore leaves one pair of rules.
//   - Docker restarted: its chains are made again, and the link's rules
//     come back by themselves.
//   - Docker first: the default Connect is refused (ErrForeignDrop), one
//     with DockerUser works, and Close leaves Docker's table as it was,
//     line for line.
//
// Throughout: the links reach the outside, the outside does not reach
// them, the container reaches the outside and is reached at its
// published port.
func TestRealDocker(t *testing.T) {
	requireTools(t)
	for _, c := range []string{"dockerd", "containerd", "runc", "docker", "iptables-nft", "go", "nsenter"} {
		nstest.RequireCmd(t, c)
	}
	w := nstest.NewWorld(t, "drl-")
	privateDirs(t, false, "/var/lib/docker", "/run/docker", "/etc/docker", "/var/lib/containerd", "/run/containerd")
	greeter(t, w, "203.0.113.1:8081")
	iptables := func(args ...string) string {
		return nstest.Cmd(t, "ip", append([]string{"netns", "exec", w.HostName, "iptables-nft"}, args...)...)
	}

	// nsnet first.
	ns1 := nstest.NewNS(t, "drl-ns1")
	l1, err := nat.Config{HostNS: w.Host, DockerUser: true}.Connect(ns1, "up0", netip.MustParsePrefix("10.34.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	d := startDocker(t, w)
	d.testImage()
	if !waitFor(func() bool { return nsnetRules(iptables) == 2 }) {
		t.Fatalf("no rules in DOCKER-USER after Docker started:\n%s", iptables("-S", "DOCKER-USER"))
	}
	// Containers need cgroups: as root they run; in a user namespace
	// runc cannot make its cgroups (the machine's are root's), and the
	// container checks skip, saying so. Docker's chains, its restart and
	// ip_forward are checked either way.
	web := func() error {
		d.docker("rm", "-f", "web")
		_, err := d.docker("run", "-d", "-p", "8080:80", "--name", "web", "nsnet-test:1")
		return err
	}
	containerErr := web()
	containers := func(t *testing.T, when string) {
		t.Run("containers "+when, func(t *testing.T) {
			if containerErr != nil && nstest.Rootless() && strings.Contains(containerErr.Error(), "cgroup") {
				nstest.SkipRootless(t, "runc cannot make a container's cgroups (the machine's are root's)")
			}
			if containerErr != nil {
				t.Fatalf("docker run: %v", containerErr)
			}
			if got, err := lineFrom(w.Inet.Dial, "203.0.113.2:8080"); err != nil || !strings.HasPrefix(got, "hello from the container to 203.0.113.1") {
				t.Errorf("Docker's published port from outside: %q, %v", got, err)
			}
			out, err := d.docker("run", "--rm", "nsnet-test:1", "/srv", "dial", "203.0.113.1:8081")
			if err != nil || strings.TrimSpace(out) != "hello from the outside to 203.0.113.2" {
				t.Errorf("a container to the outside: %q, %v", out, err)
			}
		})
	}
	check := func(when string) {
		t.Helper()
		if got, err := lineFrom(ns1.Dial, "203.0.113.1:8081"); err != nil || got != "hello from the outside to 203.0.113.2" {
			t.Errorf("%s: the link to the outside: %q, %v", when, got, err)
		}
		if unsolicited(t, w, l1.NSAddr.Addr().String()) {
			t.Errorf("%s: the outside reaches the link's namespace", when)
		}
		if got := nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "cat", "/proc/sys/net/ipv4/ip_forward"); got != "1\n" {
			t.Errorf("%s: ip_forward %q: Docker turns it on", when, got)
		}
		containers(t, when)
	}
	check("nsnet, then Docker")

	nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "sh", "-c", "iptables-nft-save | iptables-nft-restore")
	time.Sleep(200 * time.Millisecond)
	if n := nsnetRules(iptables); n != 2 {
		t.Errorf("%d nsnet rules after iptables-save | iptables-restore, want 2", n)
	}
	check("after a round trip")

	d.stop()
	d.start()
	if !waitFor(func() bool { return nsnetRules(iptables) == 2 }) {
		t.Errorf("the link's rules did not come back after Docker's restart:\n%s", iptables("-S", "DOCKER-USER"))
	}
	containerErr = web()
	check("after Docker's restart")
	if err := l1.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if n := nsnetRules(iptables); n != 0 {
		t.Errorf("%d nsnet rules left after Close", n)
	}

	// Docker first.
	before := saveDocker(t, w)
	ns2 := nstest.NewNS(t, "drl-ns2")
	if _, err := (nat.Config{HostNS: w.Host}).Connect(ns2, "up0", netip.MustParsePrefix("10.34.2.0/24")); !errors.Is(err, nat.ErrForeignDrop) {
		t.Errorf("the default Connect on a Docker host: %v, want ErrForeignDrop", err)
	}
	l2, err := nat.Config{HostNS: w.Host, DockerUser: true}.Connect(ns2, "up0", netip.MustParsePrefix("10.34.2.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := lineFrom(ns2.Dial, "203.0.113.1:8081"); err != nil || got != "hello from the outside to 203.0.113.2" {
		t.Errorf("Docker, then nsnet: the link to the outside: %q, %v", got, err)
	}
	containers(t, "Docker, then nsnet")
	if err := l2.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if after := saveDocker(t, w); after != before {
		t.Errorf("Docker's table after Close:\n%s", lineDiff(before, after))
	}
}
