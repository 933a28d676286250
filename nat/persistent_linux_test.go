package nat_test

import (
	"errors"
	"maps"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// TestPersistent: a persistent link made by a process that is gone keeps
// working; Sweep and other processes' Connects leave it; PersistentLinks
// finds it with its tag; Remove from another process removes all of it
// (and the uplink's forwarding goes back off), a second Remove says
// nothing was there.
func TestPersistent(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "per-")
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	before := state(t, w)
	killedChild(t, w, "per-ns", "10.50.0.0/24", "", "NSNET_HELPER_PERSISTENT=cni net=a id=1", "NSNET_HELPER_VETH=nsp-one",
		"NSNET_HELPER_PREFIX6=fd00:50::/64")
	ns, err := netns.Open("per-ns")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if seen, err := nstest.Echo(ns, "203.0.113.1:8080"); err != nil || seen != "203.0.113.2" {
		t.Fatalf("the persistent link after its maker died: %q %v", seen, err)
	}
	if res, err := nat.Sweep(w.Host); err != nil || len(res.Links) != 0 || res.Elements != 0 || res.Table {
		t.Errorf("Sweep took the persistent link: %+v %v", res, err)
	}
	other := nstest.NewNS(t, "per-other")
	if _, err := (nat.Config{HostNS: w.Host}).Connect(other, "up0", netip.MustParsePrefix("10.50.0.0/25")); !errors.Is(err, nat.ErrOverlap) {
		t.Errorf("an overlapping Connect: %v, want ErrOverlap", err)
	}
	if seen, err := nstest.Echo(ns, "203.0.113.1:8080"); err != nil || seen != "203.0.113.2" {
		t.Errorf("the persistent link after Sweep and Connect: %q %v", seen, err)
	}
	pls, err := nat.PersistentLinks(w.Host)
	if err != nil || len(pls) != 1 || pls[0].HostVeth != "nsp-one" || pls[0].Tag != "cni net=a id=1" || !pls[0].Up {
		t.Fatalf("PersistentLinks = %+v, %v", pls, err)
	}
	if err := nat.Remove(w.Host, "nsp-one"); err != nil {
		t.Fatal(err)
	}
	if err := nat.Remove(w.Host, "nsp-one"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("second Remove: %v, want ErrNotExist", err)
	}
	if err := nat.Remove(w.Host, "up0"); !errors.Is(err, nat.ErrInvalidConfig) {
		t.Errorf("Remove of the uplink: %v, want ErrInvalidConfig", err)
	}
	sameState(t, w, before, "after Remove")
}

// TestPersistentOrphan: the namespace of a persistent link is deleted (its
// pair with it): PersistentLinks still lists the link, not up, and Remove
// removes its entries; the host reads as before.
func TestPersistentOrphan(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "pero-")
	before := state(t, w)
	ns, err := netns.New("pero-ns")
	if err != nil {
		t.Fatal(err)
	}
	l, err := nat.Config{HostNS: w.Host, Persistent: true, HostVeth: "nsp-two", Tag: "two"}.Connect(ns, "up0", netip.MustParsePrefix("10.51.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if !l.NSAddr.IsValid() {
		t.Fatal(l)
	}
	ns.Close()
	if err := netns.Delete("pero-ns"); err != nil {
		t.Fatal(err)
	}
	for range 100 { // the kernel deletes the pair with the namespace, in a worker
		if pls, _ := nat.PersistentLinks(w.Host); len(pls) == 1 && !pls[0].Up {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	pls, err := nat.PersistentLinks(w.Host)
	if err != nil || len(pls) != 1 || pls[0].Up || pls[0].Tag != "two" {
		t.Fatalf("PersistentLinks = %+v, %v", pls, err)
	}
	if err := nat.Remove(w.Host, "nsp-two"); err != nil {
		t.Fatal(err)
	}
	sameState(t, w, before, "after Remove")
}

// TestPersistentSharesUplink: a persistent link and a process's own link
// share the uplink's forwarding: the process's last Close leaves it on for
// the persistent link (whose traffic goes on), and Remove of the
// persistent link, the last user, turns it off.
func TestPersistentSharesUplink(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "pers-")
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	before := state(t, w)
	pns := nstest.NewNS(t, "pers-p")
	own := nstest.NewNS(t, "pers-own")
	if _, err := (nat.Config{HostNS: w.Host, Persistent: true, HostVeth: "nsp-three"}).Connect(pns, "up0", netip.MustParsePrefix("10.52.0.0/24")); err != nil {
		t.Fatal(err)
	}
	l, err := nat.Config{HostNS: w.Host}.Connect(own, "up0", netip.MustParsePrefix("10.52.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := sysctl(t, w, "net.ipv4.conf.up0.forwarding"); got != "1" {
		t.Errorf("after the process's last Close, up0 forwarding %s with a persistent link live", got)
	}
	if seen, err := nstest.Echo(pns, "203.0.113.1:8080"); err != nil || seen != "203.0.113.2" {
		t.Errorf("the persistent link after the other's Close: %q %v", seen, err)
	}
	if err := nat.Remove(w.Host, "nsp-three"); err != nil {
		t.Fatal(err)
	}
	sameState(t, w, before, "after Remove")

	// Close in the process that made it removes it as Remove does.
	pl, err := nat.Config{HostNS: w.Host, Persistent: true}.Connect(pns, "up0", netip.MustParsePrefix("10.52.2.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pl.Close(); err != nil {
		t.Fatal(err)
	}
	if pls, err := nat.PersistentLinks(w.Host); err != nil || len(pls) != 0 {
		t.Errorf("after Close: %+v %v", pls, err)
	}
	sameState(t, w, before, "after Close")
}

// TestPersistentRenamed: a persistent link's host end renamed by someone
// is still found and removed by Remove with its name at Connect (the
// table records its index); a link of someone else's that took the name
// is left alone.
func TestPersistentRenamed(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "perr-")
	before := state(t, w)
	ns := nstest.NewNS(t, "perr-ns")
	if _, err := (nat.Config{HostNS: w.Host, Persistent: true, HostVeth: "nsp-four"}).Connect(ns, "up0", netip.MustParsePrefix("10.53.0.0/24")); err != nil {
		t.Fatal(err)
	}
	nstest.Cmd(t, "ip", "-n", w.HostName, "link", "set", "nsp-four", "name", "renamed4")
	nstest.Cmd(t, "ip", "-n", w.HostName, "link", "add", "nsp-four", "type", "veth", "peer", "name", "other4")
	if err := nat.Remove(w.Host, "nsp-four"); err != nil {
		t.Fatal(err)
	}
	out := nstest.Cmd(t, "ip", "-n", w.HostName, "-o", "link")
	if strings.Contains(out, "renamed4") || !strings.Contains(out, "nsp-four") {
		t.Errorf("after Remove:\n%s", out)
	}
	nstest.Cmd(t, "ip", "-n", w.HostName, "link", "del", "nsp-four")
	sameState(t, w, before, "after Remove")
}

// TestRemoveLeavesNoCovers: Remove of a persistent link, next to a live
// link that keeps the table, leaves the claims as before its Connect: its
// claim and the covers no other claim needs go.
func TestRemoveLeavesNoCovers(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "perc-")
	keeper, err := nat.Config{HostNS: w.Host}.Connect(nstest.NewNS(t, "perc-keep"), "up0", netip.MustParsePrefix("10.53.64.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer keeper.Close()
	before := claimKeys(t, w)
	if _, err := (nat.Config{HostNS: w.Host, Persistent: true, HostVeth: "nsp-five"}).Connect(nstest.NewNS(t, "perc-ns"), "up0", netip.MustParsePrefix("10.53.0.0/24")); err != nil {
		t.Fatal(err)
	}
	if with := claimKeys(t, w); !with["10.53.0.0 . 23"] {
		t.Fatalf("no cover 10.53.0.0/23 with the persistent link: %v", with)
	}
	if err := nat.Remove(w.Host, "nsp-five"); err != nil {
		t.Fatal(err)
	}
	if after := claimKeys(t, w); !maps.Equal(after, before) {
		t.Errorf("claims after Remove %v, before Connect %v", after, before)
	}
}
