// Package naterr holds the error values that nat's internal packages
// return and nat exports (nat.ErrInvalidConfig and nat.ErrOverlap are
// these), so that errors.Is matches whichever package made the error.
package naterr

import (
	"errors"
	"fmt"
	"os"
)

// ErrInvalidConfig is nat.ErrInvalidConfig: input refused before the
// kernel is touched.
var ErrInvalidConfig = errors.New("invalid nat config")

// ErrOverlap is nat.ErrOverlap: a prefix overlaps an address or route of
// the host or another live link's prefix.
var ErrOverlap = errors.New("prefix overlaps")

// ErrDeadHolder marks an overlap with what a dead owner left: Connect
// sweeps and tries once more.
var ErrDeadHolder = errors.New("held by a dead owner")

// ErrGone marks what a Close found already removed by someone else (a
// flushed ruleset, a Sweep, a deleted uplink).
var ErrGone = fmt.Errorf("already gone: %w", os.ErrNotExist)
