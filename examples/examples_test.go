// Package examples_test runs the example programs as a user would (as
// root, each in the private world it builds for itself) and checks what
// they print.
package examples_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

func build(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command("go", "build", "-o", bin, "./"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./%s: %v\n%s", name, err, out)
	}
	return bin
}

func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	// The examples make their own private namespaces: run them as fresh
	// processes, not as sandbox helpers.
	cmd.Env = append(os.Environ(), "NSNET_PRIVATE=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(bin), args, err, out)
	}
	return string(out)
}

func TestExamples(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ping")
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go toolchain not in PATH")
	}
	out := run(t, build(t, "tutorial"))
	for _, want := range []string{"$ ip netns add example-ns1", "nat.AddRules", "the outside says: 203.0.113.2", "nothing left behind",
		"default via 10.0.0.1 dev ex-veth-b"} { // (a link by name, as ip prints it)
		if !strings.Contains(out, want) {
			t.Errorf("tutorial output lacks %q:\n%s", want, out)
		}
	}
	connect := build(t, "connect")
	out = run(t, connect)
	if !strings.Contains(out, "the outside host saw 203.0.113.2") || !strings.Contains(out, "closed:") {
		t.Errorf("connect output:\n%s", out)
	}
	out = run(t, connect, "-ipv6")
	if !strings.Contains(out, "the outside host saw 203.0.113.2") || !strings.Contains(out, "TCP to [2001:db8::1]:8080: the outside host saw 2001:db8::2") {
		t.Errorf("connect -ipv6 output:\n%s", out)
	}
	out = run(t, build(t, "network"))
	for _, want := range []string{"client1 -> server:8080: hello 10.0.10.3, I am 10.0.10.2", "client2 -> server:8080: hello 10.0.10.4, I am 10.0.10.2",
		"over IPv6: hello fd00:10::3, I am fd00:10::2", "client2 -> the outside host: hello 203.0.113.2",
		"(published): hello 203.0.113.1, I am 10.0.10.2", "network closed"} {
		if !strings.Contains(out, want) {
			t.Errorf("network output lacks %q:\n%s", want, out)
		}
	}
	nsrun := build(t, "nsrun")
	out = run(t, nsrun, "-private", "--", "ping", "-c1", "-W2", "203.0.113.1")
	if !strings.Contains(out, "1 received") {
		t.Errorf("nsrun ping:\n%s", out)
	}
	cmd := exec.Command(nsrun, "-private", "--", "sh", "-c", "exit 7")
	cmd.Env = append(os.Environ(), "NSNET_PRIVATE=")
	if err := cmd.Run(); err == nil || cmd.ProcessState.ExitCode() != 7 {
		t.Errorf("nsrun did not pass on the exit status 7: %v", err)
	}
}

// TestSlowlink: the slow link's upload runs no faster than its rate
// (2 Mbit/s, +15%: one 512 KiB transfer), and the lossy link's client gets through by
// retrying, or the program says the kernel lacks netem.
func TestSlowlink(t *testing.T) {
	nstest.Require(t)
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go toolchain not in PATH")
	}
	out := run(t, build(t, "slowlink"))
	var secs, rate float64
	for _, line := range strings.Split(out, "\n") {
		fmt.Sscanf(line, "512 KiB uploaded in %f s: %f Mbit/s", &secs, &rate)
	}
	if rate < 1 || rate > 2.3 { // at most the rate (+15%); a loaded machine may not fill it
		t.Errorf("the slow link ran at %v Mbit/s, want at most 2.3 and at least 1:\n%s", rate, out)
	}
	if !strings.Contains(out, "answered in") && !strings.Contains(out, "no sch_netem") {
		t.Errorf("neither an answer through the lossy link nor a word about netem:\n%s", out)
	}
}

// TestNsrun: names resolve and pages load in nsrun's namespace (from the
// private world's outside host); with -name, ip netns exec reaches the
// namespace while the command runs; what the command leaves running in
// the background is killed when it exits; a SIGTERM sent to nsrun reaches
// the command once.
func TestNsrun(t *testing.T) {
	nstest.Require(t)
	for _, c := range []string{"go", "getent", "curl", "ip"} {
		nstest.RequireCmd(t, c)
	}
	nsrun := build(t, "nsrun")
	out := run(t, nsrun, "-private", "--", "sh", "-c", "getent hosts outside.test && curl -sS --max-time 5 http://outside.test/")
	if !strings.Contains(out, "203.0.113.1") || !strings.Contains(out, "hello from the outside host") {
		t.Errorf("nsrun getent + curl:\n%s", out)
	}
	out = run(t, nsrun, "-private", "-name", "box", "--", "ip", "netns", "exec", "box", "getent", "hosts", "outside.test")
	if !strings.Contains(out, "203.0.113.1") {
		t.Errorf("ip netns exec box inside nsrun -name box:\n%s", out)
	}

	out = run(t, nsrun, "-private", "--", "sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!")
	var pid int
	fmt.Sscan(strings.TrimSpace(out), &pid)
	if pid == 0 {
		t.Fatalf("no pid from %q", out)
	}
	if !gone(pid) {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Errorf("the background sleep (pid %d) outlived nsrun", pid)
	}

	cmd := exec.Command(nsrun, "-private", "--", "sh", "-c", `trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.1; done`)
	cmd.Env = append(os.Environ(), "NSNET_PRIVATE=")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	if line, _ := r.ReadString('\n'); line != "ready\n" {
		t.Fatalf("first line %q", line)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	rest, _ := io.ReadAll(r)
	err := cmd.Wait()
	if strings.Count(string(rest), "got TERM") != 1 || cmd.ProcessState.ExitCode() != 3 {
		t.Errorf("SIGTERM to nsrun: the command said %q, nsrun exited %v", rest, err)
	}
}

// gone reports whether pid ends (or is a zombie) within two seconds.
func gone(pid int) bool {
	for range 200 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}
