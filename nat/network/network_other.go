//go:build !linux

package network

import (
	"errors"
	"net/netip"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
)

var errUnsupported = errors.New("network: networks are Linux bridges and nftables")

type state struct{}
type member struct{}

func (c Config) create() (*Network, error) { return nil, errUnsupported }
func (n *Network) attach(ns *netns.Handle, m MemberConfig) (*Member, error) {
	return nil, errUnsupported
}
func (st *state) close() error                     { return errUnsupported }
func (st *state) list() []*Member                  { return nil }
func (st *state) lookup(name string) []netip.Addr  { return nil }
func (m *Member) close() error                     { return errUnsupported }
func (m *Member) publish(ports []nat.Port) error   { return errUnsupported }
func (m *Member) unpublish(ports []nat.Port) error { return errUnsupported }
func (m *Member) ports() []nat.Port                { return nil }
func list(host *netns.Handle) ([]Info, error)      { return nil, errUnsupported }
