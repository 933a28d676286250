package nsnet_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/nsnet/nsnet/addr"
	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/route"
	"github.com/nsnet/nsnet/veth"
)

// TestOneErrorValue: an error value a caller checks is one value in every
// package that returns it, so errors.Is(err, veth.ErrInvalidName) holds
// for a bad name refused by netns, and the other way round. (Checked before
// anything is touched: no privileges needed.)
func TestOneErrorValue(t *testing.T) {
	invalidName := []error{netns.ErrInvalidName, veth.ErrInvalidName, addr.ErrInvalidName, route.ErrInvalidName, nat.ErrInvalidName}
	interrupted := []error{veth.ErrInterrupted, addr.ErrInterrupted, route.ErrInterrupted}
	for _, set := range [][]error{invalidName, interrupted} {
		for _, e := range set[1:] {
			if e != set[0] {
				t.Errorf("%v and %v are different values", e, set[0])
			}
		}
	}
	refusals := map[string]error{
		"netns.New":   func() error { _, err := netns.New("a/b"); return err }(),
		"veth.Create": veth.Create(nil, veth.Config{Name: "a/b", PeerName: "c"}),
		"addr.Add":    addr.Add(nil, "a b", netip.MustParsePrefix("192.0.2.1/24")),
	}
	for what, err := range refusals {
		for _, target := range invalidName {
			if !errors.Is(err, target) {
				t.Errorf("%s: %v does not match %v", what, err, target)
			}
		}
	}
}
