package testnet

import (
	"os/exec"
	"regexp"
	"strconv"
	"testing"

	"github.com/nsnet/nsnet/internal/world"
)

// World is a private host and internet (see package world) made by NewWorld.
type World = world.World

// NewWorld builds a World whose namespaces are called prefix+"host" and
// prefix+"inet"; it is removed when t ends.
//
// Every World counts, on its outside host, the packets that arrive with a
// private source address (RFC 1918 and shared address space): a connected
// namespace's packet that left the uplink un-masqueraded. The test fails
// at its end if there was one: not one packet un-masqueraded, in any test.
func NewWorld(t testing.TB, prefix string) *World {
	t.Helper()
	w, err := world.New(prefix+"host", prefix+"inet")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	if _, err := exec.LookPath("nft"); err == nil {
		out, err := exec.Command("ip", "netns", "exec", w.InetName, "nft",
			"add table ip leakwatch; add chain ip leakwatch in { type filter hook prerouting priority -300; }; "+
				"add rule ip leakwatch in ip saddr { 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10 } counter").CombinedOutput()
		if err != nil {
			t.Fatalf("leak counter: %v: %s", err, out)
		}
		t.Cleanup(func() {
			if n := leaked(w); n != 0 {
				t.Errorf("%d packets with a private source reached the outside host (un-masqueraded)", n)
			}
		})
	}
	return w
}

var packets = regexp.MustCompile(`counter packets (\d+)`)

// leaked reads the leak counter of w's outside host; -1 if it cannot.
func leaked(w *World) int {
	out, err := exec.Command("ip", "netns", "exec", w.InetName, "nft", "list", "chain", "ip", "leakwatch", "in").Output()
	m := packets.FindSubmatch(out)
	if err != nil || m == nil {
		return -1
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}
