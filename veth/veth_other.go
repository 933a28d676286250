//go:build !linux

package veth

import (
	"errors"
	"fmt"

	"github.com/nsnet/nsnet/netns"
)

var errUnsupported = fmt.Errorf("veth: %w: links are managed over Linux rtnetlink", errors.ErrUnsupported)

// Create returns an error wrapping errors.ErrUnsupported.
func Create(ns *netns.Handle, c Config) error { return errUnsupported }

// List returns an error wrapping errors.ErrUnsupported.
func List(ns *netns.Handle) ([]Link, error) { return nil, errUnsupported }

// Lookup returns an error wrapping errors.ErrUnsupported.
func Lookup(ns *netns.Handle, name string) (Link, error) { return Link{}, errUnsupported }

// SetUp returns an error wrapping errors.ErrUnsupported.
func SetUp(ns *netns.Handle, name string) error { return errUnsupported }

// SetDown returns an error wrapping errors.ErrUnsupported.
func SetDown(ns *netns.Handle, name string) error { return errUnsupported }

// Delete returns an error wrapping errors.ErrUnsupported.
func Delete(ns *netns.Handle, name string) error { return errUnsupported }

// Move returns an error wrapping errors.ErrUnsupported.
func Move(ns *netns.Handle, name string, to *netns.Handle) error { return errUnsupported }
