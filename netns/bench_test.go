package netns_test

import (
	"os/exec"
	"testing"

	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// BenchmarkNewDelete is "ip netns add NAME; ip netns del NAME" done by the
// library; BenchmarkIPNetnsAddDel times the ip(8) commands in the same run.
func BenchmarkNewDelete(b *testing.B) {
	nstest.Require(b)
	for b.Loop() {
		h, err := netns.New("bench")
		if err != nil {
			b.Fatal(err)
		}
		h.Close()
		if err := netns.Delete("bench"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIPNetnsAddDel(b *testing.B) {
	nstest.Require(b)
	nstest.RequireCmd(b, "ip")
	for b.Loop() {
		if err := exec.Command("ip", "netns", "add", "bench").Run(); err != nil {
			b.Fatal(err)
		}
		if err := exec.Command("ip", "netns", "del", "bench").Run(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDo is one round trip into a namespace and back.
func BenchmarkDo(b *testing.B) {
	nstest.Require(b)
	h, err := netns.NewAnonymous()
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	for b.Loop() {
		if err := h.Do(func() error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIPNetnsExec is the shell's way to run something inside.
func BenchmarkIPNetnsExecTrue(b *testing.B) {
	nstest.Require(b)
	nstest.RequireCmd(b, "ip")
	if err := exec.Command("ip", "netns", "add", "bench-exec").Run(); err != nil {
		b.Fatal(err)
	}
	defer exec.Command("ip", "netns", "del", "bench-exec").Run()
	for b.Loop() {
		if err := exec.Command("ip", "netns", "exec", "bench-exec", "true").Run(); err != nil {
			b.Fatal(err)
		}
	}
}
