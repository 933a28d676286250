// Package nstest runs tests, examples and programs that use nsnet in a
// private world, the way net/http/httptest runs them against a local
// server: nothing they do can touch the machine's real network.
//
// [Main], called from a package's TestMain, re-executes the test binary in
// new network and mount namespaces of its own (Go makes the mount tree
// private there), mounts an empty tmpfs on /run/netns, /etc/netns and
// /run/netns-etc so that named namespaces and their configuration live and
// die with the run, brings lo up and runs the tests there. Links, addresses, routes, nftables rules, sysctls and named
// namespaces made by the tests exist only inside; when the run ends the
// kernel removes them all. [Isolate] does the same for a program (an
// example, a benchmark). [NewWorld] builds, inside, a fake host with an
// uplink and a fake outside host on documentation addresses
// (203.0.113.0/24), so that NAT can be tested with real traffic.
//
//	func TestMain(m *testing.M) { nstest.Main(m) }
//
//	func TestMine(t *testing.T) {
//		nstest.Require(t) // skips without root, fails in CI
//		w := nstest.NewWorld(t, "mine-")
//		ns := nstest.NewNS(t, "mine-ns")
//		l, err := nat.Config{HostNS: w.Host}.Connect(ns, w.Uplink, netip.MustParsePrefix("10.0.0.0/24"))
//		...
//		nstest.Listen(t, w.Inet, w.Outside.String()+":8080")
//		seen, err := nstest.Echo(ns, w.Outside.String()+":8080") // seen: 203.0.113.2, masqueraded
//	}
//
// Without root, Main and Isolate make the private world in a user
// namespace of their own, the caller's uid and gid mapped to 0 (what
// unshare -Urnm does): the tests have every capability over the world's
// network and mount namespaces and none over the machine, so the same
// privileged tests run as an ordinary user. Where /run is root's, the
// world covers it with an overlay of its own (and root's lock files
// there with files of its own), so that tools the tests run (iptables,
// ufw) can take their locks; a missing /run/netns or /etc/netns appears
// the same way. A test that cannot run in a user namespace calls
// [SkipRootless] saying why; the run ends with a line counting the
// privileged tests that ran (go test -v shows it).
//
// Where no private world can be made at all (unprivileged user
// namespaces turned off: the error names the setting; off Linux) the
// tests run in place, every test that calls [Require] skips, and the
// package's Examples (which cannot skip) are left out; with
// NSNET_REQUIRE_PRIVILEGED=1 (set it in CI) they fail instead, so that a
// green run means the privileged tests ran.
package nstest

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	// envInside marks the re-executed process: "1" in the one Main or
	// Isolate started (it sets the namespaces up), "child" in helpers
	// started by Child (already inside).
	envInside  = "NSNET_PRIVATE"
	envRequire = "NSNET_REQUIRE_PRIVILEGED"
	// envRequireTools turns a skip for a missing tool into a failure.
	envRequireTools = "NSNET_REQUIRE_TOOLS"
	// envRootless is "1" in a private world made without root: in a user
	// namespace of its own.
	envRootless = "NSNET_ROOTLESS"
	// envScratch names a directory (made by the parent, removed by it
	// when the child exits) on which the private world mounts a tmpfs
	// for its own files: overlay layers, the iptables lock.
	envScratch = "NSNET_SCRATCH"
)

var (
	inside    bool
	rootless  bool // inside, in a user namespace of its own (not root)
	whyNot    string
	privateNS string // readlink of the private network namespace
)

// Main runs the tests of m in a private world (see the package doc) and
// exits with their status. Call it from TestMain.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	switch os.Getenv(envInside) {
	case "1":
		if err := setUp(); err != nil {
			if os.Getenv(envRootless) != "1" {
				fmt.Fprintf(os.Stderr, "nstest: set-up failed: %v\n", err)
				return 1
			}
			// A rootless world this machine cannot complete (an old
			// kernel without unprivileged overlays, say): the tests run
			// in place, still in its namespaces, and the privileged
			// ones skip saying why (or fail under the require variable).
			whyNot = fmt.Sprintf("a rootless private world could not be set up: %v", err)
			skipExamples()
			return m.Run()
		}
		fallthrough
	case "child":
		inside = true
		rootless = os.Getenv(envRootless) == "1"
		privateNS, _ = os.Readlink("/proc/self/ns/net")
		code := m.Run()
		if os.Getenv(envInside) == "1" {
			report()
		}
		return code
	}
	code, err := rerun()
	if err != nil {
		// Unsharing fails where user namespaces are off for the caller,
		// and off Linux: run in place and let Require skip (or fail
		// under CI).
		whyNot = fmt.Sprintf("cannot create private namespaces: %v", err)
		skipExamples()
		return m.Run()
	}
	return code
}

// skipExamples leaves out the Examples of a run outside a private world:
// they make namespaces and links, and unlike tests they cannot call
// Require. Under NSNET_REQUIRE_PRIVILEGED=1 they run (and fail).
func skipExamples() {
	if os.Getenv(envRequire) == "1" {
		return
	}
	flag.Parse()
	skip := "^Example"
	if f := flag.Lookup("test.skip"); f != nil && f.Value.String() != "" {
		skip = f.Value.String() + "|" + skip
	}
	if flag.Set("test.skip", skip) == nil {
		fmt.Fprintf(os.Stderr, "nstest: examples skipped (%s)\n", whyNot)
	}
}

// Isolate re-executes the running program, with the same arguments and
// standard streams, in private namespaces, and exits with its status: it
// returns only in the re-executed program, there with the private world
// built (its host is the private namespace itself: uplink up0, outside
// host in the namespace "inet"). Close the World before exiting. For
// example programs and benchmarks that must be safe on any machine.
// Without root it makes the world in a user namespace, as Main does.
// Signals (Ctrl-C) reach the re-executed program, which decides.
func Isolate() (*World, error) {
	if os.Getenv(envInside) != "1" {
		code, err := rerun()
		if err != nil {
			return nil, fmt.Errorf("nstest: %w", err)
		}
		os.Exit(code)
	}
	if err := setUp(); err != nil {
		return nil, fmt.Errorf("nstest: %w", err)
	}
	inside = true
	rootless = os.Getenv(envRootless) == "1"
	return BuildWorld("", "inet")
}

// Require skips t unless it runs in a private world with privileges;
// with NSNET_REQUIRE_PRIVILEGED=1 it fails instead.
func Require(t testing.TB) {
	t.Helper()
	if inside {
		countRequired(t)
		return
	}
	msg := fmt.Sprintf("privileged test skipped (%s)", whyNot)
	if os.Getenv(envRequire) == "1" {
		t.Fatalf("%s; %s=1 makes this a failure", msg, envRequire)
	}
	t.Skip(msg)
}

// RequireCmd makes sure a command the test runs (an oracle such as ip,
// nft, ping) is installed: it skips t if not, naming the package to
// install, or fails under NSNET_REQUIRE_TOOLS=1 (see MissingTool).
func RequireCmd(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err == nil {
		return
	}
	pkg := packages[name]
	if pkg == "" {
		pkg = name
	}
	MissingTool(t, "%s not installed (Debian and Ubuntu: apt-get install %s)", name, pkg)
}

// packages names the Debian package of each command the tests use.
var packages = map[string]string{
	"ip": "iproute2", "nft": "nftables", "iptables": "iptables", "iptables-nft": "iptables",
	"iptables-legacy": "iptables", "ip6tables-nft": "iptables", "ping": "iputils-ping",
	"conntrack": "conntrack", "curl": "curl", "firewalld": "firewalld", "firewall-cmd": "firewalld",
	"ufw": "ufw", "dbus-daemon": "dbus", "sysctl": "procps", "bc": "bc", "go": "golang (or go.dev/dl)",
	"nsenter": "util-linux", "dockerd": "docker.io", "containerd": "containerd", "runc": "runc", "docker": "docker.io",
}

// MissingTool skips t, saying what is missing (format and args), or fails
// it under NSNET_REQUIRE_TOOLS=1, which CI sets: there every tool is
// installed, and a test that did not run is a failure. A machine without
// an optional tool (firewalld, ufw, the CNI plugins) still passes the
// README's test command, NSNET_REQUIRE_PRIVILEGED=1 included.
func MissingTool(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(envRequireTools) == "1" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// Cmd runs a command to completion and returns its standard output,
// failing t with its standard error if it fails.
func Cmd(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := CmdErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

// CmdErr runs a command and returns its standard output, and an error
// carrying its standard error if it fails.
func CmdErr(name string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	c := exec.Command(name, args...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Child returns a command that runs this test binary again as a helper
// process inside the same private world (no new namespaces), running only
// the tests that match run, with env added to its environment: for real
// second processes, such as one killed in the middle of its work.
func Child(run string, env ...string) *exec.Cmd {
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "-test.run=^"+run+"$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), envInside+"=child"), env...)
	cmd.Stderr = os.Stderr
	return cmd
}

// CheckLeaks records the open file descriptors and goroutines now and, when
// t ends, fails it if a descriptor opened since is still open, if there
// are more goroutines, or if an OS thread of the process is left in
// another network namespace than the private world's (a namespace switch
// not undone).
func CheckLeaks(t testing.TB) {
	t.Helper()
	before := openFDs()
	goroutines := runtime.NumGoroutine()
	t.Cleanup(func() {
		var problems []string
		// Threads that exit and sockets being torn down settle quickly;
		// give them a moment (generous: CI machines are shared) before
		// calling it a leak.
		for deadline := time.Now().Add(5 * time.Second); ; {
			problems = problems[:0]
			if bad := foreignThreads(); len(bad) > 0 {
				problems = append(problems, "threads in a foreign namespace: "+strings.Join(bad, ", "))
			}
			for fd, target := range openFDs() {
				if old, ok := before[fd]; !ok || old != target {
					problems = append(problems, fmt.Sprintf("fd %d leaked: %s", fd, target))
				}
			}
			if n := runtime.NumGoroutine(); n > goroutines {
				problems = append(problems, fmt.Sprintf("goroutines: %d before, %d after", goroutines, n))
			}
			if len(problems) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		slices.Sort(problems)
		for _, p := range problems {
			t.Error(p)
		}
	})
}

func openFDs() map[int]string {
	ents, _ := os.ReadDir("/proc/self/fd")
	m := make(map[int]string, len(ents))
	for _, e := range ents {
		var fd int
		if _, err := fmt.Sscan(e.Name(), &fd); err != nil {
			continue
		}
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the fd of the ReadDir itself, closed by now
		}
		m[fd] = target
	}
	return m
}

// foreignThreads lists the threads whose network namespace is not the
// private world's (or the one the process started in).
func foreignThreads() []string {
	want, err := os.Readlink("/proc/self/ns/net")
	if privateNS != "" {
		want, err = privateNS, nil
	}
	if err != nil {
		return nil // no /proc (off Linux)
	}
	tasks, _ := os.ReadDir("/proc/self/task")
	var bad []string
	for _, task := range tasks {
		got, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err != nil {
			continue // the thread exited meanwhile
		}
		if got != want {
			bad = append(bad, fmt.Sprintf("tid %s in %s", task.Name(), got))
		}
	}
	return bad
}

// Outside reports whether the process is the one a test binary started
// as, before Main re-runs it in a private world: code that needs this
// machine's network (go install from the module proxy) runs there.
func Outside() bool { return os.Getenv(envInside) == "" }
