package veth_test

import (
	"os/exec"
	"testing"

	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/veth"
)

// BenchmarkCreateDelete is "ip link add bv0 type veth peer name bv1; ip
// link del bv0" done by the library; BenchmarkIPLinkAddDel times the ip(8)
// commands in the same run. Deleting a veth waits for an RCU grace period,
// which dominates both.
func BenchmarkCreateDelete(b *testing.B) {
	nstest.Require(b)
	for b.Loop() {
		if err := veth.Create(nil, veth.Config{Name: "bv0", PeerName: "bv1"}); err != nil {
			b.Fatal(err)
		}
		if err := veth.Delete(nil, "bv0"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIPLinkAddDel(b *testing.B) {
	nstest.Require(b)
	nstest.RequireCmd(b, "ip")
	for b.Loop() {
		if err := exec.Command("ip", "link", "add", "bv0", "type", "veth", "peer", "name", "bv1").Run(); err != nil {
			b.Fatal(err)
		}
		if err := exec.Command("ip", "link", "del", "bv0").Run(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreate is the creation alone (deletes happen outside the timer).
func BenchmarkCreate(b *testing.B) {
	nstest.Require(b)
	for b.Loop() {
		if err := veth.Create(nil, veth.Config{Name: "bv0", PeerName: "bv1", Up: true}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		veth.Delete(nil, "bv0")
		b.StartTimer()
	}
}

func BenchmarkIPLinkAdd(b *testing.B) {
	nstest.Require(b)
	nstest.RequireCmd(b, "ip")
	for b.Loop() {
		if err := exec.Command("ip", "link", "add", "bv0", "up", "type", "veth", "peer", "name", "bv1").Run(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		veth.Delete(nil, "bv0")
		b.StartTimer()
	}
}
