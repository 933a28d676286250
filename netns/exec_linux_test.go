package netns_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/veth"
)

// TestStartMatchesIPNetnsExec: a command started with Start sees what it
// sees under "ip netns exec": the namespace's /etc/netns/NAME files over
// /etc's and its own links in /sys/class/net, while the caller's /etc and
// /sys are unchanged; an anonymous namespace's EtcDir works the same way;
// the caller's SysProcAttr (here Setpgid and Pdeathsig) still applies.
func TestStartMatchesIPNetnsExec(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	nstest.CheckLeaks(t)
	ns := nstest.NewNS(t, "exec-ns")
	if err := veth.Create(ns, veth.Config{Name: "ex0", PeerName: "ex1"}); err != nil {
		t.Fatal(err)
	}
	etc := netns.EtcDir(ns)
	if etc != "/etc/netns/exec-ns" {
		t.Fatalf("EtcDir = %q", etc)
	}
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(etc)
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver 192.0.2.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const script = "cat /etc/resolv.conf; ls /sys/class/net"
	want := nstest.Cmd(t, "ip", "netns", "exec", "exec-ns", "sh", "-c", script)
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")
	hostSys := nstest.Cmd(t, "ls", "/sys/class/net")

	var out bytes.Buffer
	cmd := exec.Command("sh", "-c", script)
	cmd.Stdout = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := ns.Run(cmd); err != nil {
		t.Fatal(err)
	}
	if out.String() != want {
		t.Errorf("Start shows\n%s\nip netns exec shows\n%s", out.String(), want)
	}
	out.Reset()
	cmd = exec.Command("sh", "-c", `[ $$ = "$(cut -d' ' -f5 /proc/$$/stat)" ] && echo own group`)
	cmd.Stdout = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := ns.Run(cmd); err != nil || out.String() != "own group\n" {
		t.Errorf("SysProcAttr.Setpgid was not applied: %q, %v", out.String(), err)
	}
	if got, _ := os.ReadFile("/etc/resolv.conf"); !bytes.Equal(got, hostResolv) {
		t.Errorf("the caller's /etc/resolv.conf changed: %q", got)
	}
	if got := nstest.Cmd(t, "ls", "/sys/class/net"); got != hostSys {
		t.Errorf("the caller's /sys changed:\n%s\nwas\n%s", got, hostSys)
	}

	// An anonymous namespace: its EtcDir, bound the same way.
	anon, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	aetc := netns.EtcDir(anon)
	if err := os.MkdirAll(aetc, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(aetc)
	os.WriteFile(filepath.Join(aetc, "resolv.conf"), []byte("nameserver 192.0.2.54\n"), 0o644)
	out.Reset()
	cmd = exec.Command("sh", "-c", script)
	cmd.Stdout = &out
	if err := anon.Run(cmd); err != nil {
		t.Fatal(err)
	}
	if out.String() != "nameserver 192.0.2.54\nlo\n" {
		t.Errorf("anonymous namespace: %q", out.String())
	}
}
