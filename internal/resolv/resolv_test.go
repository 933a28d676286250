package resolv

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestParseFormat(t *testing.T) {
	c := Parse([]byte("# stub\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver 192.0.2.1\n; x\ndomain a.example\nsearch b.example c.example\noptions edns0 trust-ad\noptions ndots:2\n"))
	want := Conf{
		Servers: []netip.Addr{netip.MustParseAddr("127.0.0.53"), netip.MustParseAddr("192.0.2.1")},
		Search:  []string{"b.example", "c.example"},
		Options: []string{"edns0", "trust-ad", "ndots:2"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("Parse = %+v", c)
	}
	if c.Loopback() || !(Conf{Servers: want.Servers[:1]}).Loopback() || (Conf{}).Loopback() {
		t.Error("Loopback")
	}
	if r := c.Reachable(); len(r.Servers) != 1 || r.Servers[0] != want.Servers[1] || len(r.Search) != 2 {
		t.Errorf("Reachable = %+v", r)
	}
	if got := string(c.Format("hi")); got != "# hi\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch b.example c.example\noptions edns0 trust-ad ndots:2\n" {
		t.Errorf("Format = %q", got)
	}
	if !reflect.DeepEqual(Parse(c.Format("x")), c) {
		t.Error("Parse(Format(c)) != c")
	}
}
