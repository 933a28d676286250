package nat_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nstest"
)

// TestDefaultUplink: "" is the link of the default route the kernel uses
// (the lowest metric); no default route, two links tied for it, loopback
// and an nsnet host end are refused with errors that say what to do.
func TestDefaultUplink(t *testing.T) {
	requireTools(t)
	w := nstest.NewWorld(t, "dfl-")
	ns := nstest.NewNS(t, "dfl-ns")
	ip := func(args ...string) { nstest.Cmd(t, "ip", append([]string{"-n", w.HostName}, args...)...) }
	cfg := nat.Config{HostNS: w.Host, DNS: nat.DNSNone}
	p := netip.MustParsePrefix("10.36.0.0/24")
	connect := func(uplink string) (*nat.Link, error) { return cfg.Connect(ns, uplink, p) }

	if _, err := connect(""); err == nil || !strings.Contains(err.Error(), "no IPv4 default route") {
		t.Errorf("no default route: %v", err)
	}
	ip("link", "add", "up1", "type", "veth", "peer", "name", "up1p")
	ip("link", "set", "up1", "up")
	ip("link", "set", "up1p", "up")
	ip("addr", "add", "198.51.100.2/24", "dev", "up1")
	ip("route", "add", "default", "via", "203.0.113.1", "dev", "up0", "metric", "100")
	ip("route", "add", "default", "via", "198.51.100.1", "dev", "up1", "metric", "200")
	l, err := connect("")
	if err != nil || l.Uplink != "up0" {
		t.Fatalf("default routes with metrics 100 (up0) and 200 (up1): %v, %v", l, err)
	}
	hostEnd := l.HostVeth
	if _, err := cfg.Connect(nstest.NewNS(t, "dfl-ns2"), hostEnd, netip.MustParsePrefix("10.37.0.0/24")); !errors.Is(err, nat.ErrInvalidConfig) {
		t.Errorf("an nsnet host end as the uplink: %v", err)
	}
	l.Close()
	ip("route", "append", "default", "via", "198.51.100.1", "dev", "up1", "metric", "100")
	if _, err := connect(""); !errors.Is(err, nat.ErrInvalidConfig) || !strings.Contains(err.Error(), "several links") {
		t.Errorf("two links tied for the default route: %v", err)
	}
	if _, err := connect("lo"); !errors.Is(err, nat.ErrInvalidConfig) || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("lo as the uplink: %v", err)
	}
}
