//go:build !linux

package nstest

import (
	"errors"
	"fmt"
)

var errUnsupported = fmt.Errorf("network namespaces are Linux's: %w", errors.ErrUnsupported)

func rerun() (int, error) { return 1, errUnsupported }

func setUp() error { return errUnsupported }
