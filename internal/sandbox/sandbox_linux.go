// Package sandbox runs a test binary inside private network and mount
// namespaces of its own, so that no privileged test, whatever bug it meets,
// can touch the machine's real interfaces, nftables rules or /run/netns.
//
// A package's TestMain calls [Main]. As root, Main re-executes the test
// binary with CLONE_NEWNET|CLONE_NEWNS (Go makes / a private mount tree for
// the child), mounts a private tmpfs on /run/netns there, brings lo up and
// runs the tests. Without root the tests run in place and every test that
// calls [Require] skips, or fails when NSNET_REQUIRE_PRIVILEGED=1 (CI).
package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nsnet/nsnet/internal/private"
)

const (
	envInside  = "NSNET_SANDBOX"
	envRequire = "NSNET_REQUIRE_PRIVILEGED"
)

var (
	inside    bool
	whyNot    string
	sandboxNS string // readlink of the sandbox's network namespace
)

// Main runs the tests of m in the sandbox and exits with their status.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	switch os.Getenv(envInside) {
	case "1": // the re-executed test binary: set the sandbox up
		if err := private.SetUp(); err != nil {
			fmt.Fprintf(os.Stderr, "sandbox: set-up failed: %v\n", err)
			return 1
		}
		fallthrough
	case "child": // a helper process started by Child: already set up
		inside = true
		sandboxNS, _ = os.Readlink("/proc/self/ns/net")
		return m.Run()
	}
	if os.Geteuid() != 0 {
		whyNot = "not root"
		return m.Run()
	}
	code, err := private.Rerun(envInside)
	if err != nil {
		// Unsharing can fail in a container without CAP_SYS_ADMIN: run in
		// place and let Require skip (or fail under CI).
		whyNot = fmt.Sprintf("cannot create sandbox namespaces: %v", err)
		return m.Run()
	}
	return code
}

// Inside reports whether the tests run in the sandbox, with privileges.
func Inside() bool { return inside }

// Require skips t unless it runs in the sandbox; with
// NSNET_REQUIRE_PRIVILEGED=1 it fails instead, so that a green CI means the
// privileged tests really ran.
func Require(t testing.TB) {
	t.Helper()
	if inside {
		return
	}
	msg := fmt.Sprintf("privileged test skipped (%s): run as root, e.g. sudo go test ./...", whyNot)
	if os.Getenv(envRequire) == "1" {
		t.Fatalf("%s; %s=1 makes this a failure", msg, envRequire)
	}
	t.Skip(msg)
}

// RequireCmd makes sure an oracle command (ip, nft, ping) is installed:
// it skips t if not, or fails under NSNET_REQUIRE_PRIVILEGED=1.
func RequireCmd(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err == nil {
		return
	}
	msg := fmt.Sprintf("%s not installed (apt-get install iproute2 nftables iputils-ping)", name)
	if os.Getenv(envRequire) == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Cmd runs an oracle command to completion and returns its standard output,
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

// CheckLeaks records the open file descriptors and goroutines now and, when
// t ends, fails it if any descriptor opened since is still open, if there
// are more goroutines, or if any OS thread of the process is in a network
// namespace other than the sandbox's.
func CheckLeaks(t testing.TB) {
	t.Helper()
	before := openFDs()
	goroutines := runtime.NumGoroutine()
	t.Cleanup(func() {
		var problems []string
		// Threads that exit and sockets being torn down settle quickly;
		// give them a moment (generous: CI machines are shared) before calling
		// it a leak.
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

// foreignThreads lists the threads whose network namespace is not the one
// the process started in.
func foreignThreads() []string {
	want, err := os.Readlink("/proc/self/ns/net")
	if sandboxNS != "" {
		want, err = sandboxNS, nil
	}
	if err != nil {
		return []string{err.Error()}
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

// Child returns a command that runs this test binary again as a helper
// process inside the same sandbox (no new namespaces, no new mounts),
// running only the tests that match run, with env added to its
// environment. Tests use it for real second processes: crashes, two users
// of the library at once.
func Child(run string, env ...string) *exec.Cmd {
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "-test.run=^"+run+"$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), envInside+"=child"), env...)
	cmd.Stderr = os.Stderr
	return cmd
}
