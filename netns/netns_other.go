//go:build !linux

package netns

import (
	"errors"
	"fmt"
	"os/exec"
)

var errUnsupported = fmt.Errorf("netns: %w: network namespaces are Linux only", errors.ErrUnsupported)

func currentIdentity() (nsID, error) { return nsID{}, errUnsupported }

func closeFD(fd int) error { return errUnsupported }

func sysNew(name string) (_ *Handle, err error) { return nil, errUnsupported }

func sysNewAnonymous() (_ *Handle, err error) { return nil, errUnsupported }

func sysDelete(name string) (err error) { return errUnsupported }

func sysOpen(name string) (_ *Handle, err error) { return nil, errUnsupported }

func sysOpenPath(path string) (_ *Handle, err error) { return nil, errUnsupported }

func sysOpenPID(pid int) (_ *Handle, err error) { return nil, errUnsupported }

func sysCurrent() (_ *Handle, err error) { return nil, errUnsupported }

func sysList() (_ []string, err error) { return nil, errUnsupported }

func (h *Handle) sysDo(fn func() error) (err error) { return errUnsupported }

func (h *Handle) sysStart(cmd *exec.Cmd) (err error) { return errUnsupported }

func (h *Handle) sysRun(cmd *exec.Cmd) (err error) { return errUnsupported }

func (h *Handle) do(fn func() error, _ bool) error { return h.sysDo(fn) }
