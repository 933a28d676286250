//go:build !linux

package nat

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/nsnet/nsnet/netns"
)

var errUnsupported = fmt.Errorf("nat: %w: NAT is done with Linux nftables", errors.ErrUnsupported)

// Link is one namespace connected to the outside; on this system none can
// be made.
type Link struct {
	Prefix   netip.Prefix
	Uplink   string
	HostVeth string
	NSVeth   string
	HostAddr netip.Prefix
	NSAddr   netip.Prefix
}

// Close does nothing.
func (l *Link) Close() error { return nil }

// Rules is the NAT step alone; on this system none can be added.
type Rules struct {
	Prefix   netip.Prefix
	HostVeth string
	Uplink   string
}

// Close does nothing.
func (r *Rules) Close() error { return nil }

// Connect returns an error wrapping errors.ErrUnsupported.
func Connect(ns *netns.Handle, uplink string, cidr netip.Prefix) (*Link, error) {
	return nil, errUnsupported
}

// Connect returns an error wrapping errors.ErrUnsupported.
func (c Config) Connect(ns *netns.Handle, uplink string, cidr netip.Prefix) (*Link, error) {
	return nil, errUnsupported
}

// AddRules returns an error wrapping errors.ErrUnsupported.
func AddRules(host *netns.Handle, hostVeth, uplink string, cidr netip.Prefix) (*Rules, error) {
	return nil, errUnsupported
}

// CloseAll returns an error wrapping errors.ErrUnsupported.
func CloseAll(links ...*Link) error { return errUnsupported }

// Sweep returns an error wrapping errors.ErrUnsupported.
func Sweep(host *netns.Handle) (SweepResult, error) { return SweepResult{}, errUnsupported }
