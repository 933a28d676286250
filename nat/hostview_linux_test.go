package nat_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// TestHostViewAfterChanges: after random sequences of changes with ip
// (routes added, replaced and deleted, addresses, links flapped and
// deleted), Connect's answers about overlaps and the uplink agree with
// what ip -j says, with a live link keeping the library's view of the host
// alive all along. The kernel announces only some of these changes (a
// flap keeps local routes silently; a replace does not say what it
// replaced), which is what broke the route cache before.
func TestHostViewAfterChanges(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "view-")
	ns := nstest.NewNS(t, "view-ns")
	live, err := nat.Config{HostNS: w.Host}.Connect(nstest.NewNS(t, "view-live"), "up0", netip.MustParsePrefix("10.5.200.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	nstest.Cmd(t, "ip", "-n", w.HostName, "link", "add", "vx0", "type", "veth", "peer", "name", "vx1")
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) { hostViewRounds(t, w, ns, rand.New(rand.NewPCG(seed, 2))) })
	}
}

func hostViewRounds(t *testing.T, w *nstest.World, ns *netns.Handle, rng *rand.Rand) {
	ip := func(args ...string) {
		nstest.CmdErr("ip", append([]string{"-n", w.HostName}, args...)...) // some fail (nothing to delete): fine
	}
	candidates := []string{"10.70.0.0/24", "10.70.1.0/24", "10.70.2.0/24", "10.71.0.0/24", "10.71.1.0/24", "10.70.0.0/16",
		"fd70::/64", "fd70:1::/64", "fd70::/48", "fd71::/64", "fd71:0:0:1::/64"}
	ops := []func(){
		func() { ip("route", "add", pick(rng, "10.70.0.0/24", "10.70.1.0/25", "10.70.2.64/26"), "dev", "up0") },
		func() {
			ip("route", "replace", pick(rng, "10.70.0.0/24", "10.70.1.0/25", "10.70.2.64/26"), "dev", pick(rng, "up0", "vx0"), "metric", pick(rng, "0", "5"))
		},
		func() { ip("route", "del", pick(rng, "10.70.0.0/24", "10.70.1.0/25", "10.70.2.64/26")) },
		func() { ip("addr", "add", pick(rng, "10.71.0.1/32", "10.71.1.9/24"), "dev", pick(rng, "up0", "vx0")) },
		func() { ip("addr", "del", pick(rng, "10.71.0.1/32", "10.71.1.9/24"), "dev", pick(rng, "up0", "vx0")) },
		func() { ip("link", "set", pick(rng, "up0", "vx0"), "down") },
		func() { ip("link", "set", pick(rng, "up0", "vx0"), "up") },
		func() { ip("link", "set", "vx1", pick(rng, "up", "down")) },
		func() {
			ip("link", "del", "vx0")
			ip("link", "add", "vx0", "type", "veth", "peer", "name", "vx1")
		},
		// IPv6: the kernel announces what a link going down or away
		// takes with it, and removes the addresses of a link that goes
		// down.
		func() {
			ip("-6", "route", "add", pick(rng, "fd70::/64", "fd70:1::/64", "fd70::/56"), "dev", pick(rng, "up0", "vx0"))
		},
		func() {
			ip("-6", "route", "replace", pick(rng, "fd70::/64", "fd70:1::/64", "fd70::/56"), "dev", pick(rng, "up0", "vx0"), "metric", pick(rng, "1", "5"))
		},
		func() { ip("-6", "route", "del", pick(rng, "fd70::/64", "fd70:1::/64", "fd70::/56")) },
		func() {
			ip("addr", "add", pick(rng, "fd71::1/128", "fd71:0:0:1::9/64"), "dev", pick(rng, "up0", "vx0"), "nodad")
		},
		func() {
			ip("addr", "del", pick(rng, "fd71::1/128", "fd71:0:0:1::9/64"), "dev", pick(rng, "up0", "vx0"))
		},
	}
	for round := range 20 {
		for range 1 + rng.IntN(5) {
			ops[rng.IntN(len(ops))]()
		}
		routes := hostRoutes(t, w)
		upState := nstest.Cmd(t, "ip", "-n", w.HostName, "-j", "-4", "addr", "show", "dev", "up0")
		upUp := strings.Contains(upState, `"UP"`)
		upV4 := strings.Contains(upState, `"family":"inet"`)
		for _, c := range candidates {
			p := netip.MustParsePrefix(c)
			holder := ""
			for _, r := range routes {
				if r.Overlaps(p) {
					holder = r.String()
					break
				}
			}
			// (IPv6 routed: the uplink's IPv6 address goes when it goes down.)
			l, err := nat.Config{HostNS: w.Host, RoutedIPv6: true}.Connect(ns, "up0", p)
			if err == nil {
				l.Close()
			}
			switch {
			case !upUp:
				if err == nil || !strings.Contains(err.Error(), "is down") {
					t.Errorf("round %d, %s: up0 is down per ip, Connect says %v", round, c, err)
				}
			case !upV4 && p.Addr().Is4():
				if err == nil || !strings.Contains(err.Error(), "no IPv4 address") {
					t.Errorf("round %d, %s: up0 has no IPv4 address per ip, Connect says %v", round, c, err)
				}
			case holder != "" && !errors.Is(err, nat.ErrOverlap):
				t.Errorf("round %d, %s: ip shows %s, Connect says %v", round, c, holder, err)
			case holder == "" && err != nil:
				t.Errorf("round %d, %s: ip shows no overlap, Connect says %v\n%v", round, c, err, routes)
			}
		}
	}
}

func pick(rng *rand.Rand, s ...string) string { return s[rng.IntN(len(s))] }

// hostRoutes is every IPv4 and IPv6 route of the host's tables that an
// overlap check counts (not default, broadcast, multicast or anycast, not
// IPv6 link-local), per ip -j.
func hostRoutes(t *testing.T, w *nstest.World) []netip.Prefix {
	t.Helper()
	var ps []netip.Prefix
	for _, fam := range []string{"-4", "-6"} {
		var routes []struct {
			Dst  string `json:"dst"`
			Type string `json:"type"`
		}
		out := nstest.Cmd(t, "ip", "-n", w.HostName, "-j", fam, "route", "show", "table", "all")
		if err := json.Unmarshal([]byte(out), &routes); err != nil {
			t.Fatal(err)
		}
		for _, r := range routes {
			if r.Dst == "default" || r.Type == "broadcast" || r.Type == "multicast" || r.Type == "anycast" {
				continue
			}
			if !strings.Contains(r.Dst, "/") {
				if fam == "-4" {
					r.Dst += "/32"
				} else {
					r.Dst += "/128"
				}
			}
			p, err := netip.ParsePrefix(r.Dst)
			if err != nil || netip.MustParsePrefix("fe80::/10").Overlaps(p) {
				continue
			}
			ps = append(ps, p)
		}
	}
	return ps
}
