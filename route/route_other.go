//go:build !linux

package route

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/nsnet/nsnet/netns"
)

var errUnsupported = fmt.Errorf("route: %w: routes are managed over Linux rtnetlink", errors.ErrUnsupported)

func sysAdd(ns *netns.Handle, r Route) (err error) { return errUnsupported }

func sysReplace(ns *netns.Handle, r Route) (err error) { return errUnsupported }

func sysAddDefault(ns *netns.Handle, gw netip.Addr) (err error) { return errUnsupported }

func sysDelete(ns *netns.Handle, r Route) (err error) { return errUnsupported }

func sysList(ns *netns.Handle, f *Filter) (_ []Route, err error) { return nil, errUnsupported }

func sysGet(ns *netns.Handle, dst netip.Addr) (_ Route, err error) { return Route{}, errUnsupported }
