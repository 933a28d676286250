package nat_test

import (
	"fmt"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/nsnet/nsnet/internal/sandbox"
	"github.com/nsnet/nsnet/internal/testnet"
	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
)

func TestZZTiming(t *testing.T) {
	sandbox.Require(t)
	w := testnet.NewWorld(t, "tm-")
	cfg := nat.Config{HostNS: w.Host}
	acc := map[string]time.Duration{}
	var last time.Time
	var lastStep string
	nat.SetFailHook(func(step string) error {
		now := time.Now()
		acc[lastStep] += now.Sub(last)
		last, lastStep = now, step
		return nil
	})
	defer nat.SetFailHook(nil)
	const n = 100
	var tnew time.Duration
	for i := 0; i < n; i++ {
		t0 := time.Now()
		ns, err := netns.New(fmt.Sprintf("tm%d", i))
		if err != nil {
			t.Fatal(err)
		}
		tnew += time.Since(t0)
		last, lastStep = time.Now(), "start"
		_, err = cfg.Connect(ns, "up0", netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i), 0}), 24))
		acc[lastStep] += time.Since(last)
		if err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	for k := range acc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Printf("netns.New: %v\n", tnew/n)
	for _, k := range keys {
		fmt.Printf("%-20s %v\n", k, acc[k]/n)
	}
}
