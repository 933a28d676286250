//go:build !linux

package qdisc

import (
	"errors"
	"fmt"

	"github.com/nsnet/nsnet/netns"
)

var errUnsupported = fmt.Errorf("qdisc: %w: queueing disciplines are Linux's", errors.ErrUnsupported)

func sysSet(ns *netns.Handle, name string, index int, im Impairment) error { return errUnsupported }
