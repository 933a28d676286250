package nat_test

import (
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// TestProfileConnectSteps is a measurement, run by hand with
// NSNET_PROFILE=N (N links in one host): the median time of each step of
// Connect (from its fail hook to the next) over the first 50 links and the
// last 50, to see which step grows with the number of links. At 10,000
// (2026-12-06) it was the kernel's: the host link step's requests (above
// all the address add) and the veth create; nsnet's own steps stayed flat.
func TestProfileConnectSteps(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("NSNET_PROFILE"))
	if n == 0 {
		t.Skip("a measurement: NSNET_PROFILE=N go test -run TestProfileConnectSteps -v ./nat")
	}
	w := nstest.NewWorld(t, "prof-")
	type stamp struct {
		step string
		at   time.Time
	}
	var stamps []stamp
	nat.SetFailHook(func(s string) error { stamps = append(stamps, stamp{s, time.Now()}); return nil })
	defer nat.SetFailHook(nil)
	per := map[string][]float64{} // "early/step", "late/step"
	var links []*nat.Link
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("prof-ns%d", i)
		ns, err := netns.New(name)
		if err != nil {
			t.Fatal(err)
		}
		stamps = stamps[:0]
		t0 := time.Now()
		l, err := nat.Config{HostNS: w.Host, DNS: nat.DNSNone}.Connect(ns, "up0", netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i / 250), byte(i % 250), 0}), 24))
		end := time.Now()
		ns.Close()
		if err != nil {
			t.Fatal(err)
		}
		links = append(links, l)
		phase := ""
		if i > 1 && i <= 51 {
			phase = "early"
		} else if i > n-50 {
			phase = "late"
		}
		if phase == "" {
			continue
		}
		prev, prevName := t0, "start"
		for _, s := range stamps {
			per[phase+"/"+prevName] = append(per[phase+"/"+prevName], float64(s.at.Sub(prev).Microseconds()))
			prev, prevName = s.at, s.step
		}
		per[phase+"/"+prevName] = append(per[phase+"/"+prevName], float64(end.Sub(prev).Microseconds()))
	}
	med := func(x []float64) float64 { sort.Float64s(x); return x[len(x)/2] }
	var keys []string
	for k := range per {
		if k[:5] == "early" {
			keys = append(keys, k[6:])
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("%-16s early %7.0f us  late %7.0f us", k, med(per["early/"+k]), med(per["late/"+k]))
	}
	nat.CloseAll(links...)
}
