package nat_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nstest"
	"golang.org/x/sys/unix"
)

// TestHostEndIPv6ReadOnlyProcSys: where /proc/sys is read-only, as in many
// containers, Connect still works and the host end still gets no IPv6
// link-local address (address generation off by netlink). It runs in a
// child process with a mount namespace of its own, so that making /proc/sys
// read-only touches nothing else.
func TestHostEndIPv6ReadOnlyProcSys(t *testing.T) {
	requireTools(t)
	if os.Getenv("NSNET_HELPER") == "rosys" {
		hostEndReadOnlyProcSys(t)
		return
	}
	cmd := nstest.Child("TestHostEndIPv6ReadOnlyProcSys", "NSNET_HELPER=rosys")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), "rosys: checked") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func hostEndReadOnlyProcSys(t *testing.T) {
	for _, m := range []struct{ flags uintptr }{{unix.MS_BIND}, {unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY}} {
		if err := unix.Mount("/proc/sys", "/proc/sys", "", m.flags, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0"), 0); err == nil {
		t.Fatal("/proc/sys still writable")
	}
	w := nstest.NewWorld(t, "rosys-")
	ns := nstest.NewNS(t, "rosys-ns")
	before := state(t, w)
	l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix("10.7.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Mode string `json:"inet6_addr_gen_mode"`
	}
	out := nstest.Cmd(t, "ip", "-n", w.HostName, "-d", "-j", "link", "show", "dev", l.HostVeth)
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 || links[0].Mode != "none" {
		t.Errorf("host end address generation: %s (%v), want none", out, err)
	}
	if a := strings.TrimSpace(nstest.Cmd(t, "ip", "-n", w.HostName, "-6", "addr", "show", "dev", l.HostVeth)); strings.Contains(a, "inet6") {
		t.Errorf("host end has IPv6 addresses:\n%s", a)
	}
	if !nstest.Ping(t, "rosys-ns", "203.0.113.1") {
		t.Error("ping 203.0.113.1 failed")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if after := state(t, w); after != before {
		t.Errorf("state after Close differs:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if !t.Failed() {
		fmt.Println("rosys: checked")
	}
}
