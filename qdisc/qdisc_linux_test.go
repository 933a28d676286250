package qdisc

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"net/netip"

	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/addr"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/veth"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// TestNormalTable: the delay distribution computed here is iproute2's
// normal.dist, value for value.
func TestNormalTable(t *testing.T) {
	files, _ := filepath.Glob("/usr/lib/*/tc/normal.dist")
	files2, _ := filepath.Glob("/usr/lib/tc/normal.dist")
	files = append(files, files2...)
	if len(files) == 0 {
		nstest.MissingTool(t, "iproute2's normal.dist not installed (Debian and Ubuntu: apt-get install iproute2)")
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var want []int16
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		for _, f := range strings.Fields(line) {
			v, err := strconv.Atoi(f)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, int16(v))
		}
	}
	got := normalTable()
	if len(got) != 2*len(want) {
		t.Fatalf("%d values, normal.dist has %d", len(got)/2, len(want))
	}
	differ := 0
	for i, w := range want {
		if g := int16(binary.NativeEndian.Uint16(got[2*i:])); g != w {
			differ++
			if differ < 5 {
				t.Errorf("value %d: %d, normal.dist %d", i, g, w)
			}
		}
	}
	if differ > 0 {
		t.Errorf("%d of %d values differ from normal.dist", differ, len(want))
	}
}

// TestNetemLayout reads netem's options back as the kernel does (struct
// tc_netem_qopt, then attributes, from linux/pkt_sched.h) and checks each
// value against the Impairment.
func TestNetemLayout(t *testing.T) {
	im := Impairment{Delay: 50 * time.Millisecond, Jitter: 5 * time.Millisecond, DelayCorrelation: 25, Distribution: "normal",
		Loss: 10, Duplicate: 1, DuplicateCorrelation: 50, Corrupt: 0.5, Reorder: 25, ReorderCorrelation: 50,
		Rate: 8e9 * 8, Limit: 500}
	kind, opts := encode(im)
	if kind != "netem" {
		t.Fatalf("kind %s", kind)
	}
	u32 := func(b []byte, i int) uint32 { return binary.NativeEndian.Uint32(b[4*i:]) }
	p := func(v float64) uint32 { return uint32(math.Round(v / 100 * math.MaxUint32)) }
	if latency, limit, loss, gap, dup, jitter := u32(opts, 0), u32(opts, 1), u32(opts, 2), u32(opts, 3), u32(opts, 4), u32(opts, 5); latency != 0 || limit != 500 ||
		loss != p(10) || gap != 0 || dup != p(1) || jitter != 0 {
		t.Errorf("tc_netem_qopt: latency %d limit %d loss %d gap %d duplicate %d jitter %d", latency, limit, loss, gap, dup, jitter)
	}
	ad, err := netlink.NewAttributeDecoder(opts[24:])
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint16][]byte{}
	for ad.Next() {
		seen[ad.Type()] = ad.Bytes()
	}
	check := func(name string, typ uint16, want ...uint32) {
		t.Helper()
		b := seen[typ]
		if len(b) != 4*len(want) {
			t.Errorf("%s: %d bytes", name, len(b))
			return
		}
		for i, w := range want {
			if u32(b, i) != w {
				t.Errorf("%s[%d] = %d, want %d", name, i, u32(b, i), w)
			}
		}
	}
	check("TCA_NETEM_CORR", tcaNetemCorr, p(25), 0, p(50))
	check("TCA_NETEM_REORDER", tcaNetemReorder, p(25), p(50))
	check("TCA_NETEM_CORRUPT", tcaNetemCorrupt, p(0.5), 0)
	check("TCA_NETEM_RATE", tcaNetemRate, math.MaxUint32, 0, 0, 0)
	if v := binary.NativeEndian.Uint64(seen[tcaNetemRate64]); v != 8e9 {
		t.Errorf("TCA_NETEM_RATE64 = %d", v)
	}
	if v := int64(binary.NativeEndian.Uint64(seen[tcaNetemLatency64])); v != int64(50*time.Millisecond) {
		t.Errorf("TCA_NETEM_LATENCY64 = %d", v)
	}
	if v := int64(binary.NativeEndian.Uint64(seen[tcaNetemJitter64])); v != int64(5*time.Millisecond) {
		t.Errorf("TCA_NETEM_JITTER64 = %d", v)
	}
	if len(seen[tcaNetemDelayDist]) != 2*4096 {
		t.Errorf("TCA_NETEM_DELAY_DIST: %d bytes", len(seen[tcaNetemDelayDist]))
	}
	// Bursts: Gilbert-Elliott with 10% lost overall in bursts of 4.
	_, opts = encode(Impairment{Loss: 10, LossBurst: 4})
	if loss := u32(opts, 2); loss != 0 {
		t.Errorf("random loss %d beside the burst model", loss)
	}
	ad, _ = netlink.NewAttributeDecoder(opts[24:])
	for ad.Next() {
		if ad.Type() == tcaNetemLoss {
			nad, _ := netlink.NewAttributeDecoder(ad.Bytes())
			for nad.Next() {
				if nad.Type() != netemLossGE {
					t.Errorf("loss model %d, want NETEM_LOSS_GE", nad.Type())
				}
				b := nad.Bytes()
				pp, r := float64(u32(b, 0))/math.MaxUint32, float64(u32(b, 1))/math.MaxUint32
				if math.Abs(r-0.25) > 1e-6 || math.Abs(pp/(pp+r)-0.10) > 1e-6 || u32(b, 2) != 0 || u32(b, 3) != 0 {
					t.Errorf("gemodel p %v r %v h %d k1 %d: want r 0.25 (bursts of 4), bad share 0.10", pp, r, u32(b, 2), u32(b, 3))
				}
			}
		}
	}
}

func TestString(t *testing.T) {
	for _, c := range []struct {
		im   Impairment
		want string
	}{
		{Impairment{}, "none"},
		{Impairment{Delay: 50 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 1}, "delay 50ms 5ms loss 1%"},
		{Impairment{Rate: 10e6, Limit: 100}, "rate 10Mbit limit 100"},
		{Impairment{Loss: 10, LossBurst: 4, Reorder: 25, Delay: time.Millisecond}, "delay 1ms loss 10% bursts of 4 reorder 25%"},
	} {
		if got := c.im.String(); got != c.want {
			t.Errorf("%#v: %q, want %q", c.im, got, c.want)
		}
	}
}

// pair makes namespaces a and b joined by a veth pair va (10.9.0.1) -
// vb (10.9.0.2).
func pair(t *testing.T, prefix string) (a, b *netns.Handle) {
	t.Helper()
	nstest.Require(t)
	nstest.RequireCmd(t, "tc")
	a, b = nstest.NewNS(t, prefix+"a"), nstest.NewNS(t, prefix+"b")
	if err := veth.Create(a, veth.Config{Name: "va", PeerName: "vb", PeerNS: b}); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		ns   *netns.Handle
		link string
		ip   string
	}{{a, "va", "10.9.0.1/24"}, {b, "vb", "10.9.0.2/24"}} {
		if err := (addr.Config{NoDAD: true}).Add(x.ns, x.link, netip.MustParsePrefix(x.ip)); err != nil {
			t.Fatal(err)
		}
		if err := veth.SetUp(x.ns, x.link); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

// tcShow is tc -j qdisc show dev link in the namespace name: the root
// qdisc's kind and options.
func tcShow(t *testing.T, ns, link string) (kind string, opts map[string]any) {
	t.Helper()
	var q []struct {
		Kind    string         `json:"kind"`
		Root    bool           `json:"root"`
		Options map[string]any `json:"options"`
	}
	if err := json.Unmarshal([]byte(nstest.Cmd(t, "ip", "netns", "exec", ns, "tc", "-j", "qdisc", "show", "dev", link)), &q); err != nil {
		t.Fatal(err)
	}
	for _, x := range q {
		if x.Root {
			return x.Kind, x.Options
		}
	}
	return "", nil
}

// TestRate: a rate of 10 Mbit/s (a token bucket filter, as tc shows it)
// holds a TCP stream to it within 10%; changed to 20 Mbit/s on the live
// link, the same connection goes on at the new rate; removed, it runs
// unlimited; bad values are refused and change nothing.
func TestRate(t *testing.T) {
	a, b := pair(t, "qdr-")
	if err := Set(a, "va", Impairment{Rate: 10e6}); err != nil {
		t.Fatal(err)
	}
	if kind, opts := tcShow(t, "qdr-a", "va"); kind != "tbf" || opts["rate"] != float64(1250000) {
		t.Errorf("tc: %s %v, want tbf at 1250000 bytes/s", kind, opts)
	}
	for _, bad := range []Impairment{{Rate: 10e6, Limit: -1}, {Rate: 4}, {Loss: 101}, {Delay: -time.Millisecond}, {Jitter: time.Millisecond},
		{Reorder: 10}, {Loss: math.NaN()}, {Limit: 10}, {Distribution: "pareto", Delay: time.Second, Jitter: time.Millisecond}} {
		if err := Set(a, "va", bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Set(%#v) = %v, want ErrInvalid", bad, err)
		}
	}
	if kind, opts := tcShow(t, "qdr-a", "va"); kind != "tbf" || opts["rate"] != float64(1250000) {
		t.Errorf("after refused values, tc: %s %v", kind, opts)
	}
	if err := Set(a, "nosuch", Impairment{Rate: 1e6}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Set on a missing link: %v", err)
	}

	// One TCP connection through every phase: the sink counts bytes.
	var got atomic.Int64
	var l net.Listener
	if err := b.Do(func() (err error) { l, err = net.Listen("tcp", "10.9.0.2:9000"); return err }); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 1<<16)
		for {
			n, err := c.Read(buf)
			got.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	c, err := a.Dial("tcp", "10.9.0.2:9000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop := make(chan struct{})
	sendErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 1<<16)
		for {
			select {
			case <-stop:
				sendErr <- nil
				return
			default:
			}
			if _, err := c.Write(buf); err != nil {
				sendErr <- err
				return
			}
		}
	}()
	measure := func() float64 { // bits per second over 2 s, after 0.5 s to settle
		time.Sleep(500 * time.Millisecond)
		n0, t0 := got.Load(), time.Now()
		time.Sleep(2 * time.Second)
		return float64(got.Load()-n0) * 8 / time.Since(t0).Seconds()
	}
	// TCP's payload is 1448 of each 1514-byte frame (timestamps on).
	payload := func(rate float64) float64 { return rate * 1448 / 1514 }
	// The shaper never lets more than the rate through (+10%); less is
	// checked loosely (half), since a starved sender on a loaded machine
	// (CI runs this beside -race builds on 2 cores) cannot fill the rate:
	// idle, it measures within 10% both ways.
	if r := measure(); r < 0.5*payload(10e6) || r > 1.1*payload(10e6) {
		t.Errorf("at 10 Mbit/s: %.2f Mbit/s of payload, want at most %.2f (+10%%) and at least half", r/1e6, payload(10e6)/1e6)
	}
	if err := Set(a, "va", Impairment{Rate: 20e6}); err != nil {
		t.Fatal(err)
	}
	if r := measure(); r < 0.5*payload(20e6) || r > 1.1*payload(20e6) {
		t.Errorf("changed live to 20 Mbit/s: %.2f Mbit/s of payload", r/1e6)
	}
	if err := Remove(a, "va"); err != nil {
		t.Fatal(err)
	}
	if kind, _ := tcShow(t, "qdr-a", "va"); kind != "noqueue" {
		t.Errorf("after Remove the root qdisc is %q, want veth's noqueue", kind)
	}
	if r := measure(); r < 100e6 {
		t.Errorf("removed: %.2f Mbit/s, want unlimited (over 100)", r/1e6)
	}
	close(stop)
	if err := <-sendErr; err != nil && !errors.Is(err, io.EOF) {
		t.Errorf("the connection broke: %v", err)
	}
	if err := Remove(a, "va"); err != nil {
		t.Errorf("Remove without an impairment: %v", err)
	}
}

// netemHere skips t where the kernel has no sch_netem.
func netemHere(t *testing.T, a *netns.Handle) {
	t.Helper()
	err := Set(a, "va", Impairment{Delay: time.Millisecond})
	if err != nil && strings.Contains(err.Error(), "lacks sch_netem") {
		t.Skipf("this kernel has no sch_netem (CONFIG_NET_SCH_NETEM): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	Remove(a, "va")
}

// pingRTTs pings dst count times from ns (every 10 ms) and returns the
// round trip times, sorted, and how many came back.
func pingRTTs(t *testing.T, ns, dst string, count int) []float64 {
	out, _ := nstest.CmdErr("ip", "netns", "exec", ns, "ping", "-n", "-i", "0.01", "-W", "1", "-c", strconv.Itoa(count), dst)
	var rtts []float64
	for _, line := range strings.Split(out, "\n") {
		if _, rest, ok := strings.Cut(line, "time="); ok {
			v, _ := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			rtts = append(rtts, v)
		}
	}
	sort.Float64s(rtts)
	return rtts
}

// TestNetem: 50 ms of delay each way gives a ping a median round trip in
// [100, 110) ms; 10% loss over 2,000 packets stays within the binomial
// 99.9% bound; tc reads the settings back; removed, the delay is gone.
func TestNetem(t *testing.T) {
	a, b := pair(t, "qdn-")
	netemHere(t, a)
	for _, x := range []struct {
		ns   *netns.Handle
		link string
	}{{a, "va"}, {b, "vb"}} {
		if err := Set(x.ns, x.link, Impairment{Delay: 50 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
	}
	if kind, opts := tcShow(t, "qdn-a", "va"); kind != "netem" || opts["delay"] == nil {
		t.Errorf("tc: %s %v", kind, opts)
	}
	rtts := pingRTTs(t, "qdn-a", "10.9.0.2", 50)
	if len(rtts) < 45 || rtts[len(rtts)/2] < 100 || rtts[len(rtts)/2] >= 110 {
		t.Errorf("50 ms each way: %d replies, median %v ms", len(rtts), rtts)
	}
	Remove(b, "vb")
	if err := Set(a, "va", Impairment{Loss: 10}); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	got := len(pingRTTs(t, "qdn-a", "10.9.0.2", n))
	// Binomial(2000, 0.1): sd = sqrt(2000 * 0.1 * 0.9) = 13.4; 99.9%: 3.29 sd.
	lost, sd := float64(n-got), math.Sqrt(n*0.1*0.9)
	if math.Abs(lost-n*0.1) > 3.29*sd {
		t.Errorf("10%% loss: %v of %d lost, want %v ± %.0f", lost, n, n*0.1, 3.29*sd)
	}
	if err := Remove(a, "va"); err != nil {
		t.Fatal(err)
	}
	if rtts := pingRTTs(t, "qdn-a", "10.9.0.2", 5); len(rtts) == 0 || rtts[len(rtts)-1] > 50 {
		t.Errorf("after Remove: %v ms", rtts)
	}
}
