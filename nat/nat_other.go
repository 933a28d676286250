//go:build !linux

package nat

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/qdisc"
)

var errUnsupported = fmt.Errorf("nat: %w: NAT is done with Linux nftables", errors.ErrUnsupported)

// owned is what a Link or Rules holds in the host: nothing here.
type owned struct{}

func sysSweep(ctx context.Context, host *netns.Handle) (_ SweepResult, err error) {
	return SweepResult{}, errUnsupported
}

func sysCloseAll(links ...*Link) (err error) { return errUnsupported }

func sysAddRules(host *netns.Handle, hostVeth, uplink string, cidrs []netip.Prefix) (_ *Rules, err error) {
	return nil, errUnsupported
}

func (r *Rules) sysClose() (err error) { return errUnsupported }
func (l *Link) sysClose() (err error)  { return errUnsupported }

func (c Config) sysConnect(ctx context.Context, ns *netns.Handle, uplink string, cidr netip.Prefix) (_ *Link, err error) {
	return nil, errUnsupported
}

func (l *Link) sysPublish(ports []Port) error   { return errUnsupported }
func (l *Link) sysUnpublish(ports []Port) error { return errUnsupported }
func (o *owned) ports(to netip.Addr) []Port     { return nil }
func (l *Link) rec() *owned                     { return nil }
func (r *Rules) rec() *owned                    { return nil }

func (r *Rules) sysPublish(to netip.Addr, ports []Port) error   { return errUnsupported }
func (r *Rules) sysUnpublish(to netip.Addr, ports []Port) error { return errUnsupported }

func sysRemove(ctx context.Context, host *netns.Handle, hostVeth string) error { return errUnsupported }
func sysPersistentLinks(host *netns.Handle) ([]PersistentLink, error)          { return nil, errUnsupported }
func sysLinks(host *netns.Handle) ([]LinkInfo, error)                          { return nil, errUnsupported }
func (l *Link) sysImpair(toNS, fromNS qdisc.Impairment) error                  { return errUnsupported }
