package veth_test

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/nsnet/nsnet/addr"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/veth"
)

// TestBridge: two namespaces whose veth pairs are ports of one bridge
// reach each other directly (L2: ping), as ip sees it (master, kind);
// nomaster cuts one off; bad names, a missing bridge or link, and a
// master that is not a bridge are refused; Delete removes the bridge.
func TestBridge(t *testing.T) {
	nstest.Require(t)
	nstest.RequireCmd(t, "ping")
	host := nstest.NewNS(t, "brg-host")
	if err := veth.CreateBridge(host, "br0"); err != nil {
		t.Fatal(err)
	}
	if err := veth.CreateBridge(host, "br0"); !errors.Is(err, os.ErrExist) {
		t.Errorf("a second br0: %v, want os.ErrExist", err)
	}
	if err := veth.SetUp(host, "br0"); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"brg-a", "brg-b"} {
		ns := nstest.NewNS(t, name)
		port := "port" + string(rune('a'+i))
		if err := veth.Create(host, veth.Config{Name: port, PeerName: "eth0", PeerNS: ns}); err != nil {
			t.Fatal(err)
		}
		if err := veth.SetMaster(host, port, "br0"); err != nil {
			t.Fatal(err)
		}
		if err := veth.SetUp(host, port); err != nil {
			t.Fatal(err)
		}
		if err := (addr.Config{NoDAD: true}).Add(ns, "eth0", netip.MustParsePrefix([]string{"10.8.0.1/24", "10.8.0.2/24"}[i])); err != nil {
			t.Fatal(err)
		}
		if err := veth.SetUp(ns, "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	var links []struct {
		IfName   string `json:"ifname"`
		Master   string `json:"master"`
		LinkInfo struct {
			Kind string `json:"info_kind"`
		} `json:"linkinfo"`
	}
	if err := json.Unmarshal([]byte(nstest.Cmd(t, "ip", "-n", "brg-host", "-j", "-d", "link")), &links); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, l := range links {
		got[l.IfName] = l.LinkInfo.Kind + " " + l.Master
	}
	if got["br0"] != "bridge " || got["porta"] != "veth br0" || got["portb"] != "veth br0" {
		t.Errorf("ip -d link: %v", got)
	}
	if !nstest.Ping(t, "brg-a", "10.8.0.2") {
		t.Error("the two ports of br0 do not reach each other")
	}
	if err := veth.SetMaster(host, "portb", ""); err != nil {
		t.Fatal(err)
	}
	if nstest.Ping(t, "brg-a", "10.8.0.2") {
		t.Error("reached a namespace whose port left the bridge")
	}
	for _, c := range []struct {
		name, master string
		want         error
	}{
		{"portb", "nosuch", os.ErrNotExist},
		{"nosuch", "br0", os.ErrNotExist},
		{"bad/name", "br0", veth.ErrInvalidName},
		{"portb", "bad name", veth.ErrInvalidName},
	} {
		if err := veth.SetMaster(host, c.name, c.master); !errors.Is(err, c.want) {
			t.Errorf("SetMaster(%q, %q) = %v, want %v", c.name, c.master, err, c.want)
		}
	}
	if err := veth.SetMaster(host, "portb", "porta"); err == nil {
		t.Error("a veth made master of another")
	}
	if err := veth.CreateBridge(host, "bad/name"); !errors.Is(err, veth.ErrInvalidName) {
		t.Errorf("CreateBridge(bad/name) = %v", err)
	}
	if err := veth.Delete(host, "br0"); err != nil {
		t.Fatal(err)
	}
	if l, err := veth.Lookup(host, "porta"); err != nil || l.MasterIndex != 0 {
		t.Errorf("porta after the bridge went: %+v, %v", l, err)
	}
}
