package nat_test

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/veth"
)

// TestHelperUnprivileged is not a test: the body of the unprivileged
// process TestPermissionErrors starts. It prints one line per call:
// whether the error matches os.ErrPermission, then the error.
func TestHelperUnprivileged(t *testing.T) {
	if os.Getenv("NSNET_HELPER") != "unprivileged" {
		return
	}
	report := func(name string, err error) {
		fmt.Printf("%s|%v|%v\n", name, errors.Is(err, os.ErrPermission), err)
	}
	_, err := netns.NewAnonymous()
	report("netns.NewAnonymous", err)
	report("veth.Create", veth.Create(nil, veth.Config{Name: "perm-a", PeerName: "perm-b"}))
	_, err = nat.Connect(nil, "", netip.MustParsePrefix("10.38.0.0/24"))
	report("nat.Connect nil ns", err) // refused before any privilege is needed
	ns, err := netns.Open("perm-ns")
	if err != nil {
		fmt.Println("open|false|", err)
		return
	}
	_, err = nat.Config{DNS: nat.DNSNone}.Connect(ns, "lo", netip.MustParsePrefix("10.38.0.0/24"))
	report("nat.Connect", err)
}

// TestPermissionErrors: run without privileges, each call fails with an
// error that matches os.ErrPermission and names the capability missing.
func TestPermissionErrors(t *testing.T) {
	requireTools(t)
	nstest.NewNS(t, "perm-ns")
	// The test binary, copied where an unprivileged user may run it.
	exe, _ := os.Executable()
	dir, err := os.MkdirTemp("", "nsnet-perm-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "nat.test")
	copyFile(t, exe, bin)
	cmd := exec.Command(bin, "-test.run=^TestHelperUnprivileged$", "-test.count=1")
	cmd.Env = append(os.Environ(), "NSNET_PRIVATE=child", "NSNET_HELPER=unprivileged")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if nstest.Rootless() {
		// The world's user namespace maps one uid: the helper is nobody
		// in a user namespace of its own, with no capability over the
		// world's namespaces (as a rootless container's process is over
		// the host's).
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 65534, HostID: 0, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 65534, HostID: 0, Size: 1}},
		}
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	want := map[string]string{
		"netns.NewAnonymous": "CAP_SYS_ADMIN",
		"veth.Create":        "CAP_NET_ADMIN",
		"nat.Connect":        "CAP_SYS_ADMIN", // its first privileged step enters the namespace
	}
	seen := 0
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.SplitN(line, "|", 3)
		if len(f) != 3 {
			continue
		}
		cap, ok := want[f[0]]
		if !ok {
			if f[1] == "true" {
				t.Errorf("%s: a permission error where the input is refused first: %s", f[0], f[2])
			}
			continue
		}
		seen++
		if f[1] != "true" || !strings.Contains(f[2], cap) {
			t.Errorf("%s: %s (os.ErrPermission: %s), want it to name %s", f[0], f[2], f[1], cap)
		}
	}
	if seen != len(want) {
		t.Errorf("the helper reported %d of %d calls:\n%s", seen, len(want), out)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()
}
