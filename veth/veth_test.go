package veth_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/veth"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// ipLink is the part of "ip -j link show" compared with Link.
type ipLink struct {
	Ifindex     int      `json:"ifindex"`
	Ifname      string   `json:"ifname"`
	Flags       []string `json:"flags"`
	MTU         int      `json:"mtu"`
	Operstate   string   `json:"operstate"`
	Address     string   `json:"address"`
	Link        string   `json:"link"`
	LinkIndex   int      `json:"link_index"`
	LinkNetnsid *int     `json:"link_netnsid"`
	Info        *struct {
		Kind string `json:"info_kind"`
	} `json:"linkinfo"`
}

func ipLinks(t *testing.T, nsName string) map[string]ipLink {
	t.Helper()
	args := []string{"-j", "-d", "link", "show"}
	if nsName != "" {
		args = append([]string{"-n", nsName}, args...)
	}
	var links []ipLink
	if err := json.Unmarshal([]byte(nstest.Cmd(t, "ip", args...)), &links); err != nil {
		t.Fatal(err)
	}
	m := map[string]ipLink{}
	for _, l := range links {
		m[l.Ifname] = l
	}
	return m
}

// TestCreatePeerInNamespace creates a pair with the peer inside a named
// namespace, up, with MTU and MAC addresses, and checks every field
// against ip -j -d link, on both sides.
func TestCreatePeerInNamespace(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	nstest.CheckLeaks(t)
	ns, err := netns.New("veth-t1")
	if err != nil {
		t.Fatal(err)
	}
	defer netns.Delete("veth-t1")
	defer ns.Close()

	hw := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	peerHW := net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
	err = veth.Create(nil, veth.Config{
		Name: "vt-host", PeerName: "eth0", PeerNS: ns, MTU: 1400,
		HardwareAddr: hw, PeerHardwareAddr: peerHW, Up: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer veth.Delete(nil, "vt-host")

	host, err := veth.Lookup(nil, "vt-host")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := veth.Lookup(ns, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		l      veth.Link
		nsName string
		hw     net.HardwareAddr
	}{{host, "", hw}, {peer, "veth-t1", peerHW}} {
		want := ipLinks(t, c.nsName)[c.l.Name]
		if c.l.Index != want.Ifindex || c.l.MTU != want.MTU || c.l.MTU != 1400 ||
			c.l.HardwareAddr.String() != want.Address || c.l.HardwareAddr.String() != c.hw.String() ||
			c.l.OperState != want.Operstate || c.l.Kind != want.Info.Kind || c.l.Kind != "veth" ||
			c.l.PeerIndex != want.LinkIndex || want.LinkNetnsid == nil || c.l.PeerNetNSID != *want.LinkNetnsid {
			t.Errorf("library: %+v\nip: %+v", c.l, want)
		}
		if !c.l.Up() || !strings.Contains(strings.Join(want.Flags, ","), "UP") {
			t.Errorf("%s not up: %v", c.l.Name, want.Flags)
		}
	}
	if host.PeerIndex != peer.Index || peer.PeerIndex != host.Index {
		t.Errorf("peer indexes: host %d->%d, peer %d->%d", host.Index, host.PeerIndex, peer.Index, peer.PeerIndex)
	}
	if s := host.String(); !strings.Contains(s, "vt-host@if") || !strings.Contains(s, "mtu 1400") || !strings.Contains(s, "link/ether 02:00:00:00:00:01") {
		t.Errorf("String:\n%s", s)
	}

	// List agrees with ip on the set of links.
	links, err := veth.List(ns)
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, l := range links {
		got = append(got, l.Name)
	}
	for name := range ipLinks(t, "veth-t1") {
		want = append(want, name)
	}
	if diff := cmp.Diff(want, got, cmpSort); diff != "" {
		t.Errorf("List (-ip +library):\n%s", diff)
	}

	// Down, then delete: the peer goes with it.
	if err := veth.SetDown(ns, "eth0"); err != nil {
		t.Fatal(err)
	}
	if ipLinks(t, "veth-t1")["eth0"].Operstate != "DOWN" {
		t.Errorf("eth0 not down")
	}
	if err := veth.Delete(nil, "vt-host"); err != nil {
		t.Fatal(err)
	}
	if _, ok := ipLinks(t, "veth-t1")["eth0"]; ok {
		t.Errorf("peer survived Delete")
	}
}

var cmpSort = cmp.Transformer("sort", func(in []string) []string {
	out := append([]string(nil), in...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
})

// TestMove moves an end into a namespace: it arrives down, found by name.
func TestMove(t *testing.T) {
	nstest.Require(t)
	nstest.CheckLeaks(t)
	ns, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := veth.Create(nil, veth.Config{Name: "mv0", PeerName: "mv1", Up: true}); err != nil {
		t.Fatal(err)
	}
	defer veth.Delete(nil, "mv0")
	if err := veth.Move(nil, "mv1", ns); err != nil {
		t.Fatal(err)
	}
	if _, err := veth.Lookup(nil, "mv1"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mv1 still here: %v", err)
	}
	l, err := veth.Lookup(ns, "mv1")
	if err != nil {
		t.Fatal(err)
	}
	if l.Up() {
		t.Errorf("moved link is up: %v", l)
	}
	if err := veth.SetUp(ns, "mv1"); err != nil {
		t.Fatal(err)
	}
}

// TestErrors: every exported function with missing links, duplicates, bad
// names, bad configs and closed handles; each error matches its promised
// target and nothing changes.
func TestErrors(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	nstest.CheckLeaks(t)
	if err := veth.Create(nil, veth.Config{Name: "e0", PeerName: "e1"}); err != nil {
		t.Fatal(err)
	}
	defer veth.Delete(nil, "e0")
	closed, _ := netns.NewAnonymous()
	closed.Close()
	self, err := netns.Current() // another handle on the caller's namespace
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	before := nstest.Steady(nstest.Cmd(t, "ip", "-d", "link"))

	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"create duplicate", veth.Create(nil, veth.Config{Name: "e0", PeerName: "x1"}), os.ErrExist},
		{"create duplicate peer", veth.Create(nil, veth.Config{Name: "x0", PeerName: "e1"}), os.ErrExist},
		{"create long name", veth.Create(nil, veth.Config{Name: "sixteen-bytes-xx", PeerName: "p"}), veth.ErrInvalidName},
		{"create empty peer", veth.Create(nil, veth.Config{Name: "a"}), veth.ErrInvalidName},
		{"create slash", veth.Create(nil, veth.Config{Name: "a/b", PeerName: "p"}), veth.ErrInvalidName},
		// The kernel reads % as a template (w%d becomes w0) and 0xA0 as
		// white space (issue 11).
		{"create template", veth.Create(nil, veth.Config{Name: "w%d", PeerName: "q%d", Up: true}), veth.ErrInvalidName},
		{"create 0xA0", veth.Create(nil, veth.Config{Name: "a\xa0b", PeerName: "p"}), veth.ErrInvalidName},
		{"create same names", veth.Create(nil, veth.Config{Name: "a", PeerName: "a"}), veth.ErrInvalidConfig},
		{"create bad mtu", veth.Create(nil, veth.Config{Name: "a", PeerName: "b", MTU: 20}), veth.ErrInvalidConfig},
		{"create multicast mac", veth.Create(nil, veth.Config{Name: "a", PeerName: "b", HardwareAddr: net.HardwareAddr{1, 0, 0, 0, 0, 1}}), veth.ErrInvalidConfig},
		{"create closed peer ns", veth.Create(nil, veth.Config{Name: "a", PeerName: "b", PeerNS: closed}), netns.ErrClosed},
		{"create closed ns", veth.Create(closed, veth.Config{Name: "a", PeerName: "b"}), netns.ErrClosed},
		{"lookup missing", lookupErr(nil, "nope"), os.ErrNotExist},
		{"lookup bad name", lookupErr(nil, "a:b"), veth.ErrInvalidName},
		{"lookup closed", lookupErr(closed, "e0"), netns.ErrClosed},
		{"up missing", veth.SetUp(nil, "nope"), os.ErrNotExist},
		{"down missing", veth.SetDown(nil, "nope"), os.ErrNotExist},
		{"up bad name", veth.SetUp(nil, ".."), veth.ErrInvalidName},
		{"delete missing", veth.Delete(nil, "nope"), os.ErrNotExist},
		{"delete bad name", veth.Delete(nil, ""), veth.ErrInvalidName},
		{"move missing", veth.Move(nil, "nope", closed), netns.ErrClosed},
		{"move to nil", veth.Move(nil, "e0", nil), veth.ErrInvalidConfig},
		{"create same names, PeerNS the same namespace", veth.Create(nil, veth.Config{Name: "s0", PeerName: "s0", PeerNS: self}), veth.ErrInvalidConfig},
		{"move closed target", veth.Move(nil, "e0", closed), netns.ErrClosed},
		{"list closed", listErr(closed), netns.ErrClosed},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
		} else if !strings.HasPrefix(c.err.Error(), "veth: ") {
			t.Errorf("%s: %q lacks the package prefix", c.name, c.err)
		}
	}
	if err := veth.Move(nil, "e0", nil); err == nil {
		t.Errorf("move to nil namespace succeeded")
	}
	if after := nstest.Steady(nstest.Cmd(t, "ip", "-d", "link")); after != before {
		t.Errorf("links changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func lookupErr(ns *netns.Handle, name string) error { _, err := veth.Lookup(ns, name); return err }
func listErr(ns *netns.Handle) error                { _, err := veth.List(ns); return err }

// TestListUnderChurn: List of a namespace with 200 links that stay, while
// 100 others come and go, returns all 200 every time or an error to retry
// on (the kernel flags an interrupted dump; List reads it again).
func TestListUnderChurn(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	ns := nstest.NewNS(t, "lchurn-ns")
	var stable, moving strings.Builder
	for i := range 100 {
		fmt.Fprintf(&stable, "link add s%da type veth peer name s%db\n", i, i)
	}
	for i := range 50 {
		fmt.Fprintf(&moving, "link add m%da type veth peer name m%db\n", i, i)
	}
	dir := t.TempDir()
	os.WriteFile(dir+"/stable", []byte(stable.String()), 0o600)
	os.WriteFile(dir+"/add", []byte(moving.String()), 0o600)
	var del strings.Builder
	for i := range 50 {
		fmt.Fprintf(&del, "link del m%da\n", i)
	}
	os.WriteFile(dir+"/del", []byte(del.String()), 0o600)
	nstest.Cmd(t, "ip", "-n", "lchurn-ns", "-batch", dir+"/stable")
	churn := nstest.Churn(t, func() {
		nstest.CmdErr("ip", "-n", "lchurn-ns", "-batch", dir+"/add")
		nstest.CmdErr("ip", "-n", "lchurn-ns", "-batch", dir+"/del")
	})
	complete, retry := 0, 0
	// At least 50 lists, and until five rounds of churn ran under them.
	for i := 0; (i < 50 || churn.Rounds() < 5) && i < 20000; i++ {
		ls, err := veth.List(ns)
		if errors.Is(err, veth.ErrInterrupted) {
			retry++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, l := range ls {
			if strings.HasPrefix(l.Name, "s") {
				n++
			}
		}
		if n != 200 {
			t.Errorf("a list has %d of the 200 stable links", n)
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

// TestFormatMatchesIP: Format of List's links prints what "ip link show"
// prints, line for line: loopback, a bridge and its port ("master br0"),
// pairs with both ends in the namespace (up, down, up with the peer down:
// NO-CARRIER and M-DOWN), a pair whose peer is in another namespace
// ("@ifN", "link-netnsid"), a device group, a zero queue length and an
// alias.
func TestFormatMatchesIP(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ip")
	ns := nstest.NewNS(t, "fmt-ns")
	nstest.NewNS(t, "fmt-other")
	for _, args := range [][]string{
		{"link", "add", "br0", "type", "bridge"},
		{"link", "add", "va", "type", "veth", "peer", "name", "vb"},
		{"link", "set", "va", "master", "br0", "up"},
		{"link", "add", "vc", "type", "veth", "peer", "name", "vd"},
		{"link", "set", "vc", "up"},
		{"link", "set", "vd", "up", "group", "5", "txqueuelen", "0"},
		{"link", "set", "vd", "alias", "the other end"},
		{"link", "add", "ve", "type", "veth", "peer", "name", "vf", "netns", "fmt-other"},
		{"link", "set", "ve", "up", "mtu", "1400"},
		{"link", "set", "lo", "up"},
	} {
		nstest.Cmd(t, "ip", append([]string{"-n", "fmt-ns"}, args...)...)
	}
	// Carrier and operational state settle shortly after "up": compare
	// once List reads the same before and after ip.
	for attempt := 0; ; attempt++ {
		before, err := veth.List(ns)
		if err != nil {
			t.Fatal(err)
		}
		want := nstest.Cmd(t, "ip", "-n", "fmt-ns", "link", "show")
		after, _ := veth.List(ns)
		if veth.Format(before) != veth.Format(after) && attempt < 20 {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if got := veth.Format(before); got != want {
			t.Errorf("Format:\n%s\nip link show:\n%s", got, want)
		}
		break
	}
	for _, name := range []string{"va", "vd", "ve", "lo"} {
		l, err := veth.Lookup(ns, name)
		if err != nil {
			t.Fatal(err)
		}
		want := nstest.Cmd(t, "ip", "-n", "fmt-ns", "link", "show", name)
		if got := l.String() + "\n"; got != want {
			t.Errorf("Lookup(%s).String():\n%s\nip link show %s:\n%s", name, got, name, want)
		}
	}
}
