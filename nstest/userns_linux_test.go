package nstest_test

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nsnet/nsnet/nstest"
)

func init() {
	if os.Getenv("NSTEST_HELPER") == "userns-off" {
		userNSOffHelper() // (never returns)
	}
}

// userNSOffHelper runs in a user namespace made by TestUserNamespacesOff,
// as its root: it turns user namespaces off there
// (user.max_user_namespaces = 0), then runs this test binary as an
// ordinary user (uid 1000), as a user on such a machine would.
func userNSOffHelper() {
	if err := os.WriteFile("/proc/sys/user/max_user_namespaces", []byte("0\n"), 0); err != nil {
		os.Stderr.WriteString("helper: " + err.Error() + "\n")
		os.Exit(2)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperPrivileged$", "-test.v")
	cmd.Env = append(os.Environ(), "NSTEST_HELPER=", "NSTEST_HELPER_REQUIRE=1", "TMPDIR=/tmp")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
	if err := cmd.Run(); err != nil {
		os.Stderr.WriteString("helper: " + err.Error() + "\n")
		os.Exit(1)
	}
	os.Exit(0)
}

// TestHelperPrivileged is not a test: a privileged test as the helper
// runs it, where no private world can be made.
func TestHelperPrivileged(t *testing.T) {
	if os.Getenv("NSTEST_HELPER_REQUIRE") == "" {
		return
	}
	nstest.Require(t)
}

// TestUserNamespacesOff: an ordinary user on a machine with unprivileged
// user namespaces turned off gets the privileged tests skipped with the
// setting named, not a bare permission error.
func TestUserNamespacesOff(t *testing.T) {
	nstest.Require(t)
	nstest.SkipRootless(t, "it maps 65,536 ids into a user namespace, which needs root outside")
	exe, _ := os.Executable()
	dir, err := os.MkdirTemp("", "nstest-userns-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "nstest.test")
	src, _ := os.Open(exe)
	dst, _ := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	io.Copy(dst, src)
	src.Close()
	dst.Close()
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NSNET_PRIVATE=", "NSNET_REQUIRE_PRIVILEGED=", "NSTEST_HELPER=userns-off")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 65536}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 65536}},
		GidMappingsEnableSetgroups: true,
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	for _, want := range []string{"--- SKIP: TestHelperPrivileged", "user.max_user_namespaces = 0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the run does not say %q:\n%s", want, out)
		}
	}
}
