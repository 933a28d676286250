//go:build !linux

package veth

import (
	"errors"
	"fmt"

	"github.com/nsnet/nsnet/netns"
)

var errUnsupported = fmt.Errorf("veth: %w: links are managed over Linux rtnetlink", errors.ErrUnsupported)

func sysList(ns *netns.Handle) (_ []Link, err error) { return nil, errUnsupported }

func sysLookup(ns *netns.Handle, name string) (_ Link, err error) { return Link{}, errUnsupported }

func sysSetUp(ns *netns.Handle, name string) (err error) { return errUnsupported }

func sysSetDown(ns *netns.Handle, name string) (err error) { return errUnsupported }

func sysDelete(ns *netns.Handle, name string) (err error) { return errUnsupported }

func sysMove(ns *netns.Handle, name string, to *netns.Handle) (err error) { return errUnsupported }

func sysCreate(ns *netns.Handle, c Config) (err error) { return errUnsupported }

func sysCreateBridge(ns *netns.Handle, name string) (err error) { return errUnsupported }

func sysSetMaster(ns *netns.Handle, name, master string) (err error) { return errUnsupported }
