//go:build !linux

package netns

import (
	"errors"
	"fmt"
	"os/exec"
)

var errUnsupported = fmt.Errorf("netns: %w: network namespaces are Linux only", errors.ErrUnsupported)

// Handle owns one network namespace file descriptor. Only Linux has network
// namespaces; elsewhere every function returns an error wrapping
// errors.ErrUnsupported.
type Handle struct{}

// Fd returns -1: there are no namespaces on this system.
func (h *Handle) Fd() int { return -1 }

// Close does nothing.
func (h *Handle) Close() error { return nil }

// String returns a fixed description.
func (h *Handle) String() string { return "netns(unsupported)" }

// Equal reports whether both handles are nil.
func (h *Handle) Equal(o *Handle) bool { return h == nil && o == nil }

// Name returns "".
func (h *Handle) Name() string { return "" }

// Do returns an error wrapping errors.ErrUnsupported.
func (h *Handle) Do(fn func() error) error { return errUnsupported }

// Start returns an error wrapping errors.ErrUnsupported.
func (h *Handle) Start(cmd *exec.Cmd) error { return errUnsupported }

// Run returns an error wrapping errors.ErrUnsupported.
func (h *Handle) Run(cmd *exec.Cmd) error { return errUnsupported }

// New returns an error wrapping errors.ErrUnsupported.
func New(name string) (*Handle, error) { return nil, errUnsupported }

// NewAnonymous returns an error wrapping errors.ErrUnsupported.
func NewAnonymous() (*Handle, error) { return nil, errUnsupported }

// Delete returns an error wrapping errors.ErrUnsupported.
func Delete(name string) error { return errUnsupported }

// Open returns an error wrapping errors.ErrUnsupported.
func Open(name string) (*Handle, error) { return nil, errUnsupported }

// OpenPath returns an error wrapping errors.ErrUnsupported.
func OpenPath(path string) (*Handle, error) { return nil, errUnsupported }

// OpenPID returns an error wrapping errors.ErrUnsupported.
func OpenPID(pid int) (*Handle, error) { return nil, errUnsupported }

// Current returns an error wrapping errors.ErrUnsupported.
func Current() (*Handle, error) { return nil, errUnsupported }

// List returns an error wrapping errors.ErrUnsupported.
func List() ([]string, error) { return nil, errUnsupported }

// ID returns 0.
func (h *Handle) ID() uint64 { return 0 }
