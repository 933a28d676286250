// Package private runs the current program again inside fresh network and
// mount namespaces of its own, with a private tmpfs on /run/netns: a world
// in which nothing it does can touch the machine's real network, rules or
// named namespaces. The test sandbox and the examples' default mode use it.
package private

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/nsnet/nsnet/internal/nl"
	"golang.org/x/sys/unix"
)

// Inside reports whether this process is the re-executed child marked by
// the environment variable env.
func Inside(env string) bool { return os.Getenv(env) == "1" }

// Rerun runs this executable again with the same arguments in new network
// and mount namespaces, env=1 set, and the same standard streams, and
// returns its exit code. Go makes / a private mount tree in the child when
// it unshares the mount namespace, so nothing mounted there leaks out.
// Signals are the child's to handle: it shares the terminal's process
// group; the parent ignores SIGINT and SIGTERM while it waits so that the
// child can clean up and exit.
func Rerun(env string) (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 1, err
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), env+"=1")
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
			cmd.Process.Signal(s) // the child decides; it may be in another process group
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

// SetUp prepares the inside: a private tmpfs on /run/netns and lo up.
func SetUp() error {
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", "/run/netns", "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs on /run/netns: %w", err)
	}
	return LoUp()
}

// LoUp brings up the loopback link (always ifindex 1) of the current
// namespace.
func LoUp() error {
	c, err := nl.Dial(nil)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Exec(nl.SetLinkUp(1, "", true))
}
