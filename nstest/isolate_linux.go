package nstest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/veth"
	"golang.org/x/sys/unix"
)

// rerun runs this executable again with the same arguments in new network
// and mount namespaces, NSNET_PRIVATE=1 set, and the same standard
// streams, and returns its exit code. Go makes / a private mount tree in
// the child when it unshares the mount namespace, so nothing mounted there
// leaks out. Without root, or where root lacks CAP_SYS_ADMIN (a
// container), the child gets a user namespace of its own first, the
// caller's uid and gid mapped to 0: there it has every capability over
// the network and mount namespaces it then makes, and none outside them.
//
// The child shares the terminal's process group, so Ctrl-C reaches it
// directly; the parent ignores SIGINT and SIGTERM while it waits, passing
// on a SIGTERM sent to it alone, so that the child can clean up and exit.
func rerun() (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 1, err
	}
	scratch, err := os.MkdirTemp("", "nstest-")
	if err != nil {
		return 1, err
	}
	defer os.Remove(scratch) // empty here: the child's files were on its tmpfs
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), envInside+"=1", envScratch+"="+scratch)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Unshareflags: unix.CLONE_NEWNET | unix.CLONE_NEWNS,
		Pdeathsig:    syscall.SIGKILL,
	}
	var rootErr error
	if os.Geteuid() == 0 {
		if rootErr = cmd.Start(); rootErr == nil {
			return wait(cmd)
		}
		cmd = exec.Command(exe, os.Args[1:]...)
		cmd.Env = append(os.Environ(), envInside+"=1", envScratch+"="+scratch)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Unshareflags: unix.CLONE_NEWNET | unix.CLONE_NEWNS,
			Pdeathsig:    syscall.SIGKILL,
		}
	}
	cmd.Env = append(cmd.Env, envRootless+"=1")
	cmd.SysProcAttr.Cloneflags = unix.CLONE_NEWUSER
	cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
	cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
	cmd.SysProcAttr.GidMappingsEnableSetgroups = false
	if err := cmd.Start(); err != nil {
		if rootErr != nil {
			return 1, fmt.Errorf("private namespaces: as root: %v; in a user namespace: %w", rootErr, err)
		}
		return 1, fmt.Errorf("private namespaces in a user namespace: %w%s", err, userNSOff())
	}
	return wait(cmd)
}

func wait(cmd *exec.Cmd) (int, error) {
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
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 1, err
	}
	return 0, nil
}

// userNSOff names the setting that keeps unprivileged users from making
// user namespaces, if one does ("" if none is found).
func userNSOff() string {
	for _, s := range []struct{ path, off, fix string }{
		{"/proc/sys/kernel/unprivileged_userns_clone", "0", "sysctl -w kernel.unprivileged_userns_clone=1"},
		{"/proc/sys/user/max_user_namespaces", "0", "sysctl -w user.max_user_namespaces=15000"},
		{"/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1",
			"sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile allowing userns for the test binary"},
	} {
		b, err := os.ReadFile(s.path)
		if err == nil && strings.TrimSpace(string(b)) == s.off {
			name := strings.ReplaceAll(strings.TrimPrefix(s.path, "/proc/sys/"), "/", ".")
			return fmt.Sprintf(" (unprivileged user namespaces are off: %s = %s; as root: %s)", name, s.off, s.fix)
		}
	}
	return ""
}

// setUp prepares the inside: a private tmpfs on every directory nsnet
// writes to (named namespaces, their and anonymous ones' configuration
// directories), and lo up. The directories are made if missing (empty,
// as iproute2 makes them); nothing is written into the host's. Without
// root a missing directory cannot be made in the host's /run or /etc:
// there an overlay whose upper layer (on the scratch tmpfs) holds it
// covers the parent directory, in this mount namespace only.
func setUp() error {
	rootless = os.Getenv(envRootless) == "1"
	scratch := os.Getenv(envScratch)
	if scratch != "" {
		if err := unix.Mount("tmpfs", scratch, "tmpfs", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", scratch, err)
		}
	}
	if rootless && scratch != "" && unix.Access("/run", unix.W_OK) != nil {
		if err := privateRun(scratch); err != nil {
			// Only tools' lock files need it: say so and go on.
			fmt.Fprintf(os.Stderr, "nstest: /run stays read-only (tools that lock files there will fail): %v\n", err)
		}
	}
	dirs := []string{netns.Dir, netns.EtcRoot, netns.AnonEtcRoot}
	missing := map[string][]string{} // parent directory: names to make there
	for _, dir := range dirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			if !rootless || scratch == "" {
				return err
			}
			parent := filepath.Dir(dir)
			missing[parent] = append(missing[parent], filepath.Base(dir))
		}
	}
	for parent, names := range missing {
		if err := overlayWith(scratch, parent, names); err != nil {
			return fmt.Errorf("%s cannot be made without root (%w): make it once as root (mkdir -p %s/{%s})",
				parent, err, parent, strings.Join(names, ","))
		}
	}
	for _, dir := range dirs {
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
		}
	}
	return veth.SetUp(nil, "lo")
}

// privateRun makes /run writable in a rootless world, as tools run by
// the tests expect (iptables, ufw and others create their lock files
// there): an overlay whose upper layer is ours covers it, and an empty
// file of ours covers each lock file root already has there.
func privateRun(scratch string) error {
	if err := overlayWith(scratch, "/run", nil); err != nil {
		return fmt.Errorf("a writable /run: %w", err)
	}
	locks, _ := filepath.Glob("/run/*.lock")
	for i, lock := range locks {
		if fi, err := os.Lstat(lock); err != nil || !fi.Mode().IsRegular() || unix.Access(lock, unix.W_OK) == nil {
			continue
		}
		mine := filepath.Join(scratch, fmt.Sprintf("lock%d", i))
		if err := os.WriteFile(mine, nil, 0o644); err != nil {
			return err
		}
		if err := unix.Mount(mine, lock, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("cover %s: %w", lock, err)
		}
	}
	return nil
}

// overlayWith makes the directories names appear in parent by covering
// it with an overlay whose upper layer, on the scratch tmpfs, holds them
// (in this mount namespace only: the host's parent is untouched).
func overlayWith(scratch, parent string, names []string) error {
	layer := filepath.Join(scratch, "overlay", strings.ReplaceAll(strings.Trim(parent, "/"), "/", "_"))
	upper, work := filepath.Join(layer, "upper"), filepath.Join(layer, "work")
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, name := range names {
		if err := os.MkdirAll(filepath.Join(upper, name), 0o755); err != nil {
			return err
		}
	}
	// userxattr: the overlay's own marks in user.* attributes, as an
	// unprivileged overlay (Linux 5.11 and later) must keep them.
	opts := "lowerdir=" + parent + ",upperdir=" + upper + ",workdir=" + work + ",userxattr"
	if err := unix.Mount("overlay", parent, "overlay", 0, opts); err != nil {
		return fmt.Errorf("overlay on %s: %w", parent, err)
	}
	return nil
}
