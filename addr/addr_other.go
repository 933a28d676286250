//go:build !linux

package addr

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/nsnet/nsnet/netns"
)

var errUnsupported = fmt.Errorf("addr: %w: addresses are managed over Linux rtnetlink", errors.ErrUnsupported)

func sysAdd(ns *netns.Handle, link string, p netip.Prefix) (err error) { return errUnsupported }

func sysReplace(ns *netns.Handle, link string, p netip.Prefix) (err error) { return errUnsupported }

func (c Config) sysAdd(ns *netns.Handle, link string, p netip.Prefix) (err error) {
	return errUnsupported
}

func (c Config) sysReplace(ns *netns.Handle, link string, p netip.Prefix) (err error) {
	return errUnsupported
}

func sysDelete(ns *netns.Handle, link string, p netip.Prefix) (err error) { return errUnsupported }

func sysList(ns *netns.Handle, link string) (_ []Address, err error) { return nil, errUnsupported }

func sysWaitReady(ctx context.Context, ns *netns.Handle, link string, p netip.Prefix) (err error) {
	return errUnsupported
}
