//go:build !linux

package route

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/nsnet/nsnet/netns"
)

var errUnsupported = fmt.Errorf("route: %w: routes are managed over Linux rtnetlink", errors.ErrUnsupported)

// Add returns an error wrapping errors.ErrUnsupported.
func Add(ns *netns.Handle, r Route) error { return errUnsupported }

// Replace returns an error wrapping errors.ErrUnsupported.
func Replace(ns *netns.Handle, r Route) error { return errUnsupported }

// AddDefault returns an error wrapping errors.ErrUnsupported.
func AddDefault(ns *netns.Handle, gw netip.Addr) error { return errUnsupported }

// Delete returns an error wrapping errors.ErrUnsupported.
func Delete(ns *netns.Handle, r Route) error { return errUnsupported }

// List returns an error wrapping errors.ErrUnsupported.
func List(ns *netns.Handle, f *Filter) ([]Route, error) { return nil, errUnsupported }

// Get returns an error wrapping errors.ErrUnsupported.
func Get(ns *netns.Handle, dst netip.Addr) (Route, error) { return Route{}, errUnsupported }
