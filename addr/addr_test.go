package addr_test

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
	"github.com/nsnet/nsnet/veth"
)

func TestMain(m *testing.M) { nstest.Main(m) }

type ipAddr struct {
	Family    string `json:"family"`
	Local     string `json:"local"`
	Prefixlen int    `json:"prefixlen"`
	Broadcast string `json:"broadcast"`
	Scope     string `json:"scope"`
	Tentative bool   `json:"tentative"`
	Nodad     bool   `json:"nodad"`
}

func ipAddrs(t *testing.T, nsName, dev string) []ipAddr {
	t.Helper()
	var out []struct {
		AddrInfo []ipAddr `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(nstest.Cmd(t, "ip", "-n", nsName, "-j", "addr", "show", "dev", dev)), &out); err != nil {
		t.Fatal(err)
	}
	return out[0].AddrInfo
}

func setup(t *testing.T) *netns.Handle {
	ns := nstest.NewNS(t, "addr-t")
	if err := veth.Create(ns, veth.Config{Name: "a0", PeerName: "a1", Up: true}); err != nil {
		t.Fatal(err)
	}
	return ns
}

func TestAddListReplaceDelete(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	nstest.CheckLeaks(t)
	ns := setup(t)
	v4 := netip.MustParsePrefix("10.0.0.1/24")
	v4b := netip.MustParsePrefix("192.0.2.7/31")
	v6 := netip.MustParsePrefix("fd00::1/64")
	if err := addr.Add(ns, "a0", v4); err != nil {
		t.Fatal(err)
	}
	if err := addr.Add(ns, "a0", v4b); err != nil {
		t.Fatal(err)
	}
	if err := (addr.Config{NoDAD: true}).Add(ns, "a0", v6); err != nil {
		t.Fatal(err)
	}
	got, err := addr.List(ns, "a0")
	if err != nil {
		t.Fatal(err)
	}
	a0, _ := veth.Lookup(ns, "a0")
	byAddr := map[string]addr.Address{}
	for _, a := range got {
		if a.LinkIndex != a0.Index {
			t.Errorf("address %v on link %d, want %d", a.Prefix, a.LinkIndex, a0.Index)
		}
		byAddr[a.Prefix.Addr().String()] = a
	}
	ip := ipAddrs(t, "addr-t", "a0")
	if len(ip) != len(got) {
		t.Fatalf("library %v, ip %+v", got, ip)
	}
	for _, w := range ip {
		g, ok := byAddr[w.Local]
		brd := ""
		if g.Broadcast.IsValid() {
			brd = g.Broadcast.String()
		}
		if !ok || g.Prefix.Bits() != w.Prefixlen || brd != w.Broadcast || g.Tentative() != w.Tentative {
			t.Errorf("ip %+v, library %+v", w, g)
		}
	}
	if byAddr["10.0.0.1"].Broadcast != netip.MustParseAddr("10.0.0.255") || byAddr["192.0.2.7"].Broadcast.IsValid() {
		t.Errorf("broadcast: %v", byAddr)
	}
	if byAddr["fd00::1"].Flags&0x02 == 0 { // IFA_F_NODAD
		t.Errorf("nodad not set: %+v", ip)
	}
	// Same broadcast as ip(8) gives with "brd +".
	nstest.Cmd(t, "ip", "-n", "addr-t", "addr", "add", "198.51.100.1/24", "brd", "+", "dev", "a1")
	if b := ipAddrs(t, "addr-t", "a1"); len(b) == 0 || b[0].Broadcast != "198.51.100.255" {
		t.Errorf("ip's own broadcast: %+v", b)
	}

	if err := addr.Add(ns, "a0", v4); !errors.Is(err, os.ErrExist) {
		t.Errorf("duplicate Add: %v, want ErrExist", err)
	}
	if err := addr.Replace(ns, "a0", v4); err != nil {
		t.Errorf("Replace: %v", err)
	}
	for _, p := range []netip.Prefix{v4, v4b, v6} {
		if err := addr.Delete(ns, "a0", p); err != nil {
			t.Fatal(err)
		}
	}
	if left := ipAddrs(t, "addr-t", "a0"); len(left) != 1 || left[0].Family != "inet6" || !strings.HasPrefix(left[0].Local, "fe80::") {
		t.Errorf("left after delete: %+v", left)
	}
	if err := addr.Delete(ns, "a0", v4); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("second Delete: %v, want ErrNotExist", err)
	}
	all, err := addr.List(ns, "")
	if err != nil || len(all) < 3 { // lo's two, a0's link-local, a1's ...
		t.Errorf("List all: %v %v", all, err)
	}
}

func TestWaitReady(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	ns := setup(t)
	p := netip.MustParsePrefix("fd00::5/64")
	if err := addr.Add(ns, "a0", p); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := addr.WaitReady(ctx, ns, "a0", p); err != nil {
		t.Fatal(err)
	}
	for _, a := range ipAddrs(t, "addr-t", "a0") {
		if a.Local == "fd00::5" && a.Tentative {
			t.Errorf("still tentative per ip: %+v", a)
		}
	}
	expired, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := addr.WaitReady(expired, ns, "a0", netip.MustParsePrefix("fd00::9/64")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("wait for missing address: %v", err)
	}
	// A wait that runs out while DAD is still going returns at the
	// deadline (the watch is interrupted), not when DAD ends.
	q := netip.MustParsePrefix("fd00::6/64")
	if err := addr.Add(ns, "a0", q); err != nil {
		t.Fatal(err)
	}
	short, cancel3 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel3()
	err := addr.WaitReady(short, ns, "a0", q)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wait past its deadline: %v, want context.DeadlineExceeded", err)
	}
	for _, a := range ipAddrs(t, "addr-t", "a0") {
		if a.Local == "fd00::6" && !a.Tentative {
			t.Error("WaitReady returned only after DAD ended, not at its deadline")
		}
	}
}

func TestErrors(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	nstest.CheckLeaks(t)
	ns := setup(t)
	closed, _ := netns.NewAnonymous()
	closed.Close()
	before := nstest.Steady(nstest.Cmd(t, "ip", "-n", "addr-t", "addr"))
	p := netip.MustParsePrefix("10.1.0.1/24")
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"missing link", addr.Add(ns, "nope", p), os.ErrNotExist},
		{"bad link name", addr.Add(ns, "way-too-long-name", p), addr.ErrInvalidName},
		{"zero prefix", addr.Add(ns, "a0", netip.Prefix{}), addr.ErrInvalidPrefix},
		{"unspecified", addr.Add(ns, "a0", netip.MustParsePrefix("0.0.0.0/8")), addr.ErrInvalidPrefix},
		{"multicast", addr.Add(ns, "a0", netip.MustParsePrefix("224.0.0.1/24")), addr.ErrInvalidPrefix},
		{"mapped", addr.Add(ns, "a0", netip.MustParsePrefix("::ffff:10.0.0.1/120")), addr.ErrInvalidPrefix},
		{"delete missing", addr.Delete(ns, "a0", p), os.ErrNotExist},
		{"closed", addr.Add(closed, "a0", p), netns.ErrClosed},
		{"list missing link", listErr(ns, "nope"), os.ErrNotExist},
		{"list closed", listErr(closed, ""), netns.ErrClosed},
		{"wait bad name", addr.WaitReady(context.Background(), ns, "", p), addr.ErrInvalidName},
		{"wait zero prefix", addr.WaitReady(context.Background(), ns, "a0", netip.Prefix{}), addr.ErrInvalidPrefix},
		{"wait mapped", addr.WaitReady(context.Background(), ns, "a0", netip.MustParsePrefix("::ffff:10.0.0.1/120")), addr.ErrInvalidPrefix},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
		} else if !strings.HasPrefix(c.err.Error(), "addr: ") {
			t.Errorf("%s: %q lacks the package prefix", c.name, c.err)
		}
	}
	if after := nstest.Steady(nstest.Cmd(t, "ip", "-n", "addr-t", "addr")); after != before {
		t.Errorf("addresses changed:\n%s\n---\n%s", before, after)
	}
}

func listErr(ns *netns.Handle, link string) error { _, err := addr.List(ns, link); return err }

// TestListUnderChurn: List of a link with 1,200 addresses that stay, while
// 400 others come and go, returns all 1,200 every time or an error to
// retry on (it silently missed 1-3 of them in 50-80 % of lists).
func TestListUnderChurn(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	ns := nstest.NewNS(t, "churn-ns")
	nstest.Cmd(t, "ip", "-n", "churn-ns", "link", "add", "c0", "type", "veth", "peer", "name", "c1")
	var stable, moving strings.Builder
	// IPv6: the kernel puts a new address at the head of its list, so the
	// moving ones come and go in front of the stable ones, as in a dump
	// that loses its place.
	for i := range 1200 {
		fmt.Fprintf(&stable, "addr add fd00:20::%x/128 dev c0 nodad\n", i+1)
	}
	for i := range 400 {
		fmt.Fprintf(&moving, "addr add fd00:30::%x/128 dev c0 nodad\n", i+1)
	}
	dir := t.TempDir()
	os.WriteFile(dir+"/stable", []byte(stable.String()), 0o600)
	os.WriteFile(dir+"/add", []byte(moving.String()), 0o600)
	os.WriteFile(dir+"/del", []byte(strings.ReplaceAll(strings.ReplaceAll(moving.String(), "addr add", "addr del"), " nodad", "")), 0o600)
	nstest.Cmd(t, "ip", "-n", "churn-ns", "-batch", dir+"/stable")
	churn := nstest.Churn(t, func() {
		nstest.CmdErr("ip", "-n", "churn-ns", "-batch", dir+"/add")
		nstest.CmdErr("ip", "-n", "churn-ns", "-batch", dir+"/del")
	})
	complete, retry := 0, 0
	for range 100 {
		as, err := addr.List(ns, "c0")
		if errors.Is(err, addr.ErrInterrupted) {
			retry++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, a := range as {
			if b := a.Prefix.Addr().As16(); b[0] == 0xfd && b[3] == 0x20 {
				n++
			}
		}
		if n != 1200 {
			t.Errorf("a list has %d of the 1,200 stable addresses", n)
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
