package nat_test

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/qdisc"
)

// rootQdisc is the kind and tc's options of the root qdisc of link in
// the named namespace (tc -j).
func rootQdisc(t *testing.T, ns, link string) (string, map[string]any) {
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

// rateTo measures, for 2 s, how fast a TCP stream from one namespace
// reaches a sink in another, in bits per second.
func rateTo(t *testing.T, from, to *netns.Handle, addr string) float64 {
	t.Helper()
	var l net.Listener
	if err := to.Do(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- 0
			return
		}
		defer c.Close()
		time.Sleep(500 * time.Millisecond) // (the stream settles)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	c, err := from.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(c, zeros{})
	n := <-got
	c.Close()
	return float64(n) * 8 / 2
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// TestImpair: Config.FromNS and ToNS impair each direction of a link
// (rates, tc -j as the oracle, a TCP stream each way measured); Impair
// changes them live and takes them away; bad values are refused before
// anything is made; Close leaves nothing.
func TestImpair(t *testing.T) {
	requireTools(t)
	nstest.RequireCmd(t, "tc")
	w := nstest.NewWorld(t, "imp-")
	ns := nstest.NewNS(t, "imp-ns")
	linksBefore := nstest.Cmd(t, "ip", "-n", w.HostName, "-o", "link")
	_, err := nat.Config{HostNS: w.Host, FromNS: qdisc.Impairment{Loss: 120}}.Connect(ns, "up0", netip.MustParsePrefix("10.35.0.0/24"))
	if !errors.Is(err, nat.ErrInvalidConfig) || !errors.Is(err, qdisc.ErrInvalid) {
		t.Errorf("Connect with 120%% loss: %v, want ErrInvalidConfig and qdisc.ErrInvalid", err)
	}
	if after := nstest.Cmd(t, "ip", "-n", w.HostName, "-o", "link"); after != linksBefore {
		t.Errorf("a refused Connect changed the host's links")
	}
	l, err := nat.Config{HostNS: w.Host, FromNS: qdisc.Impairment{Rate: 10e6}}.Connect(ns, "up0", netip.MustParsePrefix("10.35.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if kind, opts := rootQdisc(t, "imp-ns", l.NSVeth); kind != "tbf" || opts["rate"] != float64(1250000) {
		t.Errorf("the namespace end: %s %v, want tbf at 10 Mbit/s", kind, opts)
	}
	if kind, _ := rootQdisc(t, w.HostName, l.HostVeth); kind != "noqueue" {
		t.Errorf("the host end: %s, want noqueue (nothing towards the namespace)", kind)
	}
	payload := 10e6 * 1448 / 1514
	// At most the rate (+10%); at least half (a loaded machine's sender
	// may not fill it: see qdisc's TestRate).
	if r := rateTo(t, ns, w.Inet, "203.0.113.1:9100"); r < 0.5*payload || r > 1.1*payload {
		t.Errorf("from the namespace at 10 Mbit/s: %.2f Mbit/s of payload, want at most %.2f (+10%%) and at least half", r/1e6, payload/1e6)
	}
	nstest.Listen(t, ns, "0.0.0.0:9101")
	if err := l.Publish(nat.Port{Protocol: "tcp", HostPort: 9101}); err != nil {
		t.Fatal(err)
	}
	if err := l.Impair(qdisc.Impairment{Rate: 20e6}, qdisc.Impairment{}); err != nil {
		t.Fatal(err)
	}
	if kind, opts := rootQdisc(t, w.HostName, l.HostVeth); kind != "tbf" || opts["rate"] != float64(2500000) {
		t.Errorf("the host end after Impair: %s %v, want tbf at 20 Mbit/s", kind, opts)
	}
	if kind, _ := rootQdisc(t, "imp-ns", l.NSVeth); kind != "noqueue" {
		t.Errorf("the namespace end after Impair with no FromNS: %s", kind)
	}
	if seen, err := nstest.Echo(w.Inet, "203.0.113.2:9101"); err != nil || seen != "203.0.113.1" {
		t.Errorf("the published port through the impaired link: %q %v", seen, err)
	}
	if err := l.Impair(qdisc.Impairment{Loss: -1}, qdisc.Impairment{}); !errors.Is(err, qdisc.ErrInvalid) {
		t.Errorf("Impair with -1%% loss: %v", err)
	}
	if kind, _ := rootQdisc(t, w.HostName, l.HostVeth); kind != "tbf" {
		t.Errorf("a refused Impair changed the host end: %s", kind)
	}
	if err := l.Impair(qdisc.Impairment{}, qdisc.Impairment{}); err != nil {
		t.Fatal(err)
	}
	if kind, _ := rootQdisc(t, w.HostName, l.HostVeth); kind != "noqueue" {
		t.Errorf("after taking the impairment away: %s", kind)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Impair(qdisc.Impairment{Rate: 1e6}, qdisc.Impairment{}); err == nil {
		t.Error("Impair on a closed link succeeded")
	}
	if after := nstest.Cmd(t, "ip", "-n", w.HostName, "-o", "link"); after != linksBefore {
		t.Errorf("links left after Close")
	}
}
