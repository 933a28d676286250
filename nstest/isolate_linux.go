package nstest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/veth"
	"golang.org/x/sys/unix"
)

// rerun runs this executable again with the same arguments in new network
// and mount namespaces, NSNET_PRIVATE=1 set, and the same standard
// streams, and returns its exit code. Go makes / a private mount tree in
// the child when it unshares the mount namespace, so nothing mounted there
// leaks out. The child shares the terminal's process group, so Ctrl-C
// reaches it directly; the parent ignores SIGINT and SIGTERM while it
// waits, passing on a SIGTERM sent to it alone, so that the child can
// clean up and exit.
func rerun() (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 1, err
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), envInside+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Unshareflags: unix.CLONE_NEWNET | unix.CLONE_NEWNS,
		Pdeathsig:    syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return 1, fmt.Errorf("private namespaces: %w", err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		for s := range sigs {
			if s == syscall.SIGTERM {
				cmd.Process.Signal(s) // SIGINT came from the terminal: the child has it
			}
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 1, err
	}
	return 0, nil
}

// setUp prepares the inside: a private tmpfs on every directory nsnet
// writes to (named namespaces, their and anonymous ones' configuration
// directories), and lo up. The directories are made if missing (empty,
// as iproute2 makes them); nothing is written into the host's.
func setUp() error {
	for _, dir := range []string{netns.Dir, netns.EtcRoot, netns.AnonEtcRoot} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
		}
	}
	return veth.SetUp(nil, "lo")
}
