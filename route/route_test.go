package route_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nsnet/nsnet/addr"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/route"
	"github.com/nsnet/nsnet/veth"
)

func TestMain(m *testing.M) { nstest.Main(m) }

type ipRoute struct {
	Dst      string `json:"dst"`
	Gateway  string `json:"gateway"`
	Dev      string `json:"dev"`
	Protocol string `json:"protocol"`
	Scope    string `json:"scope"`
	Metric   int    `json:"metric"`
}

func ipRoutes(t *testing.T, nsName string, v6 bool) []ipRoute {
	t.Helper()
	args := []string{"-n", nsName, "-j"}
	if v6 {
		args = append(args, "-6")
	}
	var rs []ipRoute
	if err := json.Unmarshal([]byte(nstest.Cmd(t, "ip", append(args, "route", "show")...)), &rs); err != nil {
		t.Fatal(err)
	}
	return rs
}

// pair builds the tutorial's middle steps with the library: two named
// namespaces, a veth pair between them (peer created inside), both up,
// 10.0.0.1/24 and 10.0.0.2/24, and a default route via 10.0.0.1 inside.
func pair(t *testing.T) (host, ns *netns.Handle) {
	host = nstest.NewNS(t, "rt-host")
	ns = nstest.NewNS(t, "rt-ns")
	if err := veth.Create(host, veth.Config{Name: "veth-a", PeerName: "veth-b", PeerNS: ns, Up: true}); err != nil {
		t.Fatal(err)
	}
	if err := addr.Add(host, "veth-a", netip.MustParsePrefix("10.0.0.1/24")); err != nil {
		t.Fatal(err)
	}
	if err := addr.Add(ns, "veth-b", netip.MustParsePrefix("10.0.0.2/24")); err != nil {
		t.Fatal(err)
	}
	if err := route.AddDefault(ns, netip.MustParseAddr("10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	return host, ns
}

func TestTutorialMiddleSteps(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	nstest.RequireCmd(t, "ping")
	nstest.CheckLeaks(t)
	host, ns := pair(t)

	// ip -j route agrees with route.List, field by field.
	got, err := route.List(ns, &route.Filter{Family: 4})
	if err != nil {
		t.Fatal(err)
	}
	want := ipRoutes(t, "rt-ns", false)
	if len(got) != len(want) || len(got) != 2 {
		t.Fatalf("routes: library %v, ip %+v", got, want)
	}
	peer, err := veth.Lookup(ns, "veth-b")
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		g := got[i]
		dst := g.Dst.String()
		if g.Dst.Bits() == 0 {
			dst = "default"
		} else if g.Dst.Bits() == 32 {
			dst = g.Dst.Addr().String()
		}
		gw := ""
		if g.Gateway.IsValid() {
			gw = g.Gateway.String()
		}
		if dst != w.Dst || gw != w.Gateway || g.LinkIndex != peer.Index || w.Dev != "veth-b" || g.Metric != w.Metric {
			t.Errorf("route %d: library %v (if%d), ip %+v", i, g, g.LinkIndex, w)
		}
	}
	// ip route get and route.Get agree.
	r, err := route.Get(ns, netip.MustParseAddr("203.0.113.9"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Gateway != netip.MustParseAddr("10.0.0.1") || r.LinkIndex != peer.Index || r.Src != netip.MustParseAddr("10.0.0.2") {
		t.Errorf("Get = %+v", r)
	}
	ipGet := nstest.Cmd(t, "ip", "-n", "rt-ns", "route", "get", "203.0.113.9")
	if !strings.Contains(ipGet, "via 10.0.0.1 dev veth-b src 10.0.0.2") {
		t.Errorf("ip route get: %s", ipGet)
	}

	// Real traffic, both ways: ping and a TCP echo.
	if !nstest.Ping(t, "rt-ns", "10.0.0.1") || !nstest.Ping(t, "rt-host", "10.0.0.2") {
		t.Fatal("ping failed")
	}
	nstest.Listen(t, host, "10.0.0.1:7001")
	nstest.Listen(t, ns, "10.0.0.2:7002")
	if from, err := nstest.Echo(ns, "10.0.0.1:7001"); err != nil || from != "10.0.0.2" {
		t.Errorf("echo ns->host: from %q, %v", from, err)
	}
	if from, err := nstest.Echo(host, "10.0.0.2:7002"); err != nil || from != "10.0.0.1" {
		t.Errorf("echo host->ns: from %q, %v", from, err)
	}

	// Delete the default route: the outside becomes unreachable.
	if err := route.Delete(ns, route.Route{Dst: netip.MustParsePrefix("0.0.0.0/0")}); err != nil {
		t.Fatal(err)
	}
	if _, err := route.Get(ns, netip.MustParseAddr("203.0.113.9")); err == nil {
		t.Errorf("route get after delete succeeded")
	}
	if err := route.Delete(ns, route.Route{Dst: netip.MustParsePrefix("0.0.0.0/0")}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("second delete: %v, want ErrNotExist", err)
	}
}

func TestIPv6(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ping")
	nstest.CheckLeaks(t)
	host, ns := pair(t)
	a1, a2 := netip.MustParsePrefix("fd00::1/64"), netip.MustParsePrefix("fd00::2/64")
	if err := addr.Add(host, "veth-a", a1); err != nil {
		t.Fatal(err)
	}
	if err := addr.Add(ns, "veth-b", a2); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := addr.WaitReady(ctx, host, "veth-a", a1); err != nil {
		t.Fatal(err)
	}
	if err := addr.WaitReady(ctx, ns, "veth-b", a2); err != nil {
		t.Fatal(err)
	}
	if err := route.AddDefault(ns, netip.MustParseAddr("fd00::1")); err != nil {
		t.Fatal(err)
	}
	rs := ipRoutes(t, "rt-ns", true)
	found := false
	for _, r := range rs {
		found = found || (r.Dst == "default" && r.Gateway == "fd00::1")
	}
	if !found {
		t.Errorf("ip -6 route: %+v", rs)
	}
	if !nstest.Ping(t, "rt-ns", "fd00::1") || !nstest.Ping(t, "rt-host", "fd00::2") {
		t.Fatal("ping6 failed")
	}
	nstest.Listen(t, host, "[fd00::1]:7003")
	if from, err := nstest.Echo(ns, "[fd00::1]:7003"); err != nil || from != "fd00::2" {
		t.Errorf("echo6: from %q, %v", from, err)
	}
}

func TestErrors(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	nstest.CheckLeaks(t)
	_, ns := pair(t)
	closed, _ := netns.NewAnonymous()
	closed.Close()
	before := nstest.Steady(nstest.Cmd(t, "ip", "-n", "rt-ns", "route", "show", "table", "all"))
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"duplicate default", route.AddDefault(ns, a("10.0.0.1")), os.ErrExist},
		{"zero dst", route.Add(ns, route.Route{}), route.ErrInvalidRoute},
		{"host bits", route.Add(ns, route.Route{Dst: p("192.0.2.1/24"), Gateway: a("10.0.0.1")}), route.ErrInvalidRoute},
		{"mixed families", route.Add(ns, route.Route{Dst: p("192.0.2.0/24"), Gateway: a("fd00::1")}), route.ErrInvalidRoute},
		{"missing link", route.Add(ns, route.Route{Dst: p("192.0.2.0/24"), Link: "nope"}), os.ErrNotExist},
		{"bad link name", route.Add(ns, route.Route{Dst: p("192.0.2.0/24"), Link: "a b"}), route.ErrInvalidName},
		{"missing route", route.Delete(ns, route.Route{Dst: p("198.51.100.0/24")}), os.ErrNotExist},
		{"closed ns", route.Add(closed, route.Route{Dst: p("192.0.2.0/24"), Gateway: a("10.0.0.1")}), netns.ErrClosed},
		{"get invalid", getErr(ns, netip.Addr{}), route.ErrInvalidRoute},
		{"list bad family", listErr(ns, &route.Filter{Family: 5}), route.ErrInvalidRoute},
		{"list closed", listErr(closed, nil), netns.ErrClosed},
		{"default without gateway", route.AddDefault(ns, netip.Addr{}), route.ErrInvalidRoute},
		// The kernel's fields are 32 bits: these were cut to lo, metric 5,
		// table 100 (issue 11).
		{"link index past 32 bits", route.Add(ns, route.Route{Dst: p("192.0.2.0/24"), LinkIndex: 1<<32 + 1}), route.ErrInvalidRoute},
		{"metric past 32 bits", route.Add(ns, route.Route{Dst: p("192.0.2.0/24"), Link: "lo", Metric: 1<<32 + 5}), route.ErrInvalidRoute},
		{"table past 32 bits", route.Add(ns, route.Route{Dst: p("192.0.2.0/24"), Link: "lo", Table: 1<<32 + 100}), route.ErrInvalidRoute},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
		} else if !strings.HasPrefix(c.err.Error(), "route: ") {
			t.Errorf("%s: %q lacks the package prefix", c.name, c.err)
		}
	}
	// A gateway that is not on any connected network: the kernel says so.
	if err := route.Add(ns, route.Route{Dst: p("192.0.2.0/24"), Gateway: a("198.51.100.1")}); err == nil {
		t.Errorf("unreachable gateway accepted")
	}
	if after := nstest.Steady(nstest.Cmd(t, "ip", "-n", "rt-ns", "route", "show", "table", "all")); after != before {
		t.Errorf("routes changed:\n%s\n---\n%s", before, after)
	}
}

func getErr(ns *netns.Handle, a netip.Addr) error     { _, err := route.Get(ns, a); return err }
func listErr(ns *netns.Handle, f *route.Filter) error { _, err := route.List(ns, f); return err }

// TestRouteTypes: a route of another type than unicast is deleted with
// its type left zero (any type, as ip route del does), and String names
// the type as ip route does.
func TestRouteTypes(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	ns := nstest.NewNS(t, "rtype-ns")
	for _, typ := range []string{"blackhole", "unreachable", "prohibit", "throw"} {
		nstest.Cmd(t, "ip", "-n", "rtype-ns", "route", "add", typ, "198.51.100.0/24")
		rs, err := route.List(ns, nil)
		if err != nil || len(rs) != 1 || !strings.HasPrefix(rs[0].String(), typ+" 198.51.100.0/24") {
			t.Errorf("%s route listed as %v, %v", typ, rs, err)
		}
		if err := route.Delete(ns, route.Route{Dst: netip.MustParsePrefix("198.51.100.0/24")}); err != nil {
			t.Errorf("delete of a %s route with a zero type: %v", typ, err)
			nstest.Cmd(t, "ip", "-n", "rtype-ns", "route", "del", typ, "198.51.100.0/24")
		}
	}
}

// TestMultipath: a route with several next hops is listed with them (they
// were lost: Route{Dst} with no gateway or link), and Add makes one that
// ip reads back hop for hop.
func TestMultipath(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	ns := nstest.NewNS(t, "mp-ns")
	ip := func(args ...string) string { return nstest.Cmd(t, "ip", append([]string{"-n", "mp-ns"}, args...)...) }
	for i, l := range []string{"m0", "m1"} {
		ip("link", "add", l, "type", "veth", "peer", "name", l+"p")
		ip("link", "set", l, "up")
		ip("link", "set", l+"p", "up")
		ip("addr", "add", fmt.Sprintf("10.0.%d.1/24", i), "dev", l)
	}
	ip("route", "add", "198.51.100.0/24", "nexthop", "via", "10.0.0.2", "dev", "m0", "weight", "1",
		"nexthop", "via", "10.0.1.2", "dev", "m1", "weight", "3")
	rs, err := route.List(ns, &route.Filter{Family: 4})
	if err != nil {
		t.Fatal(err)
	}
	var got *route.Route
	for i := range rs {
		if rs[i].Dst == netip.MustParsePrefix("198.51.100.0/24") {
			got = &rs[i]
		}
	}
	if got == nil || len(got.NextHops) != 2 || got.NextHops[0].Gateway != netip.MustParseAddr("10.0.0.2") ||
		got.NextHops[1].Gateway != netip.MustParseAddr("10.0.1.2") || got.NextHops[1].Weight != 3 {
		t.Fatalf("multipath route listed as %v", got)
	}
	if s := got.String(); !strings.Contains(s, "nexthop via 10.0.1.2") || !strings.Contains(s, "weight 3") {
		t.Errorf("String() = %q", s)
	}
	err = route.Add(ns, route.Route{Dst: netip.MustParsePrefix("203.0.113.0/24"), NextHops: []route.NextHop{
		{Gateway: netip.MustParseAddr("10.0.0.3"), Link: "m0", Weight: 2},
		{Gateway: netip.MustParseAddr("10.0.1.3"), Link: "m1"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	out := ip("-j", "route", "show", "203.0.113.0/24")
	for _, want := range []string{`"gateway":"10.0.0.3","dev":"m0","weight":2`, `"gateway":"10.0.1.3","dev":"m1","weight":1`} {
		if !strings.Contains(out, want) {
			t.Errorf("ip -j route shows %s, lacking %s", out, want)
		}
	}
	bad := route.Add(ns, route.Route{Dst: netip.MustParsePrefix("192.0.2.0/24"), Gateway: netip.MustParseAddr("10.0.0.3"),
		NextHops: []route.NextHop{{Gateway: netip.MustParseAddr("10.0.1.3")}}})
	if !errors.Is(bad, route.ErrInvalidRoute) {
		t.Errorf("gateway and next hops together: %v", bad)
	}
}

// TestDefaultViaLinkLocal: AddDefault names no link, so a default route via
// an IPv6 link-local gateway is made with Add and a Link, as its doc says.
func TestDefaultViaLinkLocal(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	ns := nstest.NewNS(t, "ll-ns")
	nstest.Cmd(t, "ip", "-n", "ll-ns", "link", "add", "l0", "type", "veth", "peer", "name", "l1")
	nstest.Cmd(t, "ip", "-n", "ll-ns", "link", "set", "l0", "up")
	if err := route.AddDefault(ns, netip.MustParseAddr("fe80::1")); err == nil {
		t.Error("AddDefault via fe80::1 without a link succeeded")
	}
	err := route.Add(ns, route.Route{Dst: netip.MustParsePrefix("::/0"), Gateway: netip.MustParseAddr("fe80::1"), Link: "l0"})
	if err != nil {
		t.Fatal(err)
	}
	if out := nstest.Cmd(t, "ip", "-n", "ll-ns", "-6", "route", "show", "default"); !strings.Contains(out, "default via fe80::1 dev l0") {
		t.Errorf("ip -6 route shows %q", out)
	}
}

// TestListUnderChurn: List of a namespace with 1,200 routes that stay,
// while 400 others come and go, returns all 1,200 every time or an error
// to retry on (the kernel flags an interrupted dump; List reads it again).
func TestListUnderChurn(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	ns := nstest.NewNS(t, "rchurn-ns")
	nstest.Cmd(t, "ip", "-n", "rchurn-ns", "link", "add", "c0", "type", "veth", "peer", "name", "c1")
	nstest.Cmd(t, "ip", "-n", "rchurn-ns", "link", "set", "c0", "up")
	var stable, moving strings.Builder
	for i := range 1200 {
		fmt.Fprintf(&stable, "route add fd00:20::%x/128 dev c0\n", i+1)
	}
	for i := range 400 {
		fmt.Fprintf(&moving, "route add fd00:10::%x/128 dev c0\n", i+1)
	}
	dir := t.TempDir()
	os.WriteFile(dir+"/stable", []byte(stable.String()), 0o600)
	os.WriteFile(dir+"/add", []byte(moving.String()), 0o600)
	os.WriteFile(dir+"/del", []byte(strings.ReplaceAll(moving.String(), "route add", "route del")), 0o600)
	nstest.Cmd(t, "ip", "-n", "rchurn-ns", "-batch", dir+"/stable")
	churn := nstest.Churn(t, func() {
		nstest.CmdErr("ip", "-n", "rchurn-ns", "-batch", dir+"/add")
		nstest.CmdErr("ip", "-n", "rchurn-ns", "-batch", dir+"/del")
	})
	complete, retry := 0, 0
	// At least 100 lists, and until five rounds of churn ran under them.
	for i := 0; (i < 100 || churn.Rounds() < 5) && i < 20000; i++ {
		rs, err := route.List(ns, &route.Filter{Family: 6})
		if errors.Is(err, route.ErrInterrupted) {
			retry++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range rs {
			if b := r.Dst.Addr().As16(); r.Dst.Bits() == 128 && b[0] == 0xfd && b[3] == 0x20 {
				n++
			}
		}
		if n != 1200 {
			t.Errorf("a list has %d of the 1,200 stable routes", n)
		} else {
			complete++
		}
	}
	t.Logf("%d complete lists, %d to retry, during %d rounds of churn", complete, retry, churn.Stop())
	// List reads again while the listing keeps changing (nl.Retrying):
	// under this churn at least 99 % of calls succeed.
	if retry*100 > complete+retry {
		t.Errorf("%d of %d lists failed with ErrInterrupted (more than 1 %%)", retry, complete+retry)
	}
}
