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

// Add returns an error wrapping errors.ErrUnsupported.
func Add(ns *netns.Handle, link string, p netip.Prefix) error { return errUnsupported }

// Replace returns an error wrapping errors.ErrUnsupported.
func Replace(ns *netns.Handle, link string, p netip.Prefix) error { return errUnsupported }

// Add returns an error wrapping errors.ErrUnsupported.
func (c Config) Add(ns *netns.Handle, link string, p netip.Prefix) error { return errUnsupported }

// Replace returns an error wrapping errors.ErrUnsupported.
func (c Config) Replace(ns *netns.Handle, link string, p netip.Prefix) error { return errUnsupported }

// Delete returns an error wrapping errors.ErrUnsupported.
func Delete(ns *netns.Handle, link string, p netip.Prefix) error { return errUnsupported }

// List returns an error wrapping errors.ErrUnsupported.
func List(ns *netns.Handle, link string) ([]Address, error) { return nil, errUnsupported }

// WaitReady returns an error wrapping errors.ErrUnsupported.
func WaitReady(ctx context.Context, ns *netns.Handle, link string, p netip.Prefix) error {
	return errUnsupported
}
