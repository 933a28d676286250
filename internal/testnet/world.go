package testnet

import (
	"net/netip"
	"testing"

	"github.com/nsnet/nsnet/addr"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/veth"
)

// World is a private stand-in for a host and the internet: a "host"
// namespace with an uplink up0 (203.0.113.2/24) whose other end inet0 sits
// in an "inet" namespace holding 203.0.113.1/24, the outside host. inet has
// no route back to any namespace prefix, so only NAT can make replies
// arrive.
type World struct {
	Host, Inet         *netns.Handle
	HostName, InetName string
}

// Outside is the outside host's address.
var Outside = netip.MustParseAddr("203.0.113.1")

// NewWorld builds a World whose namespaces are called prefix+"host" and
// prefix+"inet"; it is removed when t ends.
func NewWorld(t testing.TB, prefix string) *World {
	t.Helper()
	w := &World{HostName: prefix + "host", InetName: prefix + "inet"}
	w.Host = NewNS(t, w.HostName)
	w.Inet = NewNS(t, w.InetName)
	if err := veth.Create(w.Host, veth.Config{Name: "up0", PeerName: "inet0", PeerNS: w.Inet, Up: true}); err != nil {
		t.Fatal(err)
	}
	for _, step := range []error{
		addr.Add(w.Host, "up0", netip.MustParsePrefix("203.0.113.2/24")),
		addr.Add(w.Inet, "inet0", netip.MustParsePrefix("203.0.113.1/24")),
		veth.SetUp(w.Host, "lo"),
		veth.SetUp(w.Inet, "lo"),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	return w
}
