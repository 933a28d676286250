package nat_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nstest"
)

func TestCloseAll(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "bulk-")
	before := state(t, w)
	var links []*nat.Link
	for i := range 20 {
		ns := nstest.NewNS(t, fmt.Sprintf("bulk-ns%d", i))
		l, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", netip.MustParsePrefix(fmt.Sprintf("10.1.%d.0/24", i)))
		if err != nil {
			t.Fatal(err)
		}
		links = append(links, l)
	}
	// A user's link that must survive: the group delete takes only ours.
	nstest.Cmd(t, "ip", "-n", w.HostName, "link", "add", "keep0", "type", "veth", "peer", "name", "keep1")
	if !nstest.Ping(t, "bulk-ns7", "203.0.113.1") {
		t.Fatal("ns7 cannot reach out")
	}
	if err := nat.CloseAll(append(links, links[3], nil)...); err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if err := l.Close(); err != nil {
			t.Errorf("Close after CloseAll: %v", err)
		}
	}
	out := nstest.Cmd(t, "ip", "-n", w.HostName, "-o", "link")
	if strings.Contains(out, "nsn-") || !strings.Contains(out, "keep0") {
		t.Errorf("links after CloseAll:\n%s", out)
	}
	nstest.Cmd(t, "ip", "-n", w.HostName, "link", "del", "keep0")
	if after := state(t, w); after != before {
		t.Errorf("state differs:\n%s\n---\n%s", before, after)
	}
}
