// Package examples_test runs the example programs as a user would (as
// root, each in the private world it builds for itself) and checks what
// they print.
package examples_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

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
	for _, want := range []string{"$ ip netns add example-ns1", "nat.AddRules", "the outside says: 203.0.113.2", "nothing left behind"} {
		if !strings.Contains(out, want) {
			t.Errorf("tutorial output lacks %q:\n%s", want, out)
		}
	}
	out = run(t, build(t, "connect"))
	if !strings.Contains(out, "the outside host saw 203.0.113.2") || !strings.Contains(out, "closed:") {
		t.Errorf("connect output:\n%s", out)
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
