//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// initArg, as the first argument, makes nsnet the init of nsnet run's PID
// namespace (initMain): not a command for people.
const initArg = "__nsnet-init"

// initMain runs as PID 1 of the PID namespace nsnet run made: it starts
// the command (given after "--"), in its own process group that it makes
// the terminal's foreground group (so Ctrl-C reaches the command alone),
// passes on the signals it gets, reaps every process that ends in the
// namespace, and exits with the command's status when the command exits.
// The kernel then kills whatever the command left running there: a PID
// namespace ends with its init. (As PID 1 the command itself would ignore
// signals it has no handler for, Ctrl-C included: hence this init.)
func initMain(args []string) int {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "nsnet: init: no command")
		return 2
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if isTerminal(0) {
		cmd.SysProcAttr.Foreground, cmd.SysProcAttr.Ctty = true, 0
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "nsnet run:", err)
		return 127
	}
	pid := cmd.Process.Pid
	go func() {
		for s := range sigs {
			syscall.Kill(pid, s.(syscall.Signal))
		}
	}()
	// Reap every child (orphans come to PID 1) until the command's own
	// status comes; cmd.Wait is not used, as it would race with this.
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "nsnet: init:", err)
			return 1
		}
		if got != pid {
			continue
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// takeTerminalBack makes this process's group the terminal's foreground
// group again (SIGTTOU, which a background group gets for that, ignored).
func takeTerminalBack() {
	if !isTerminal(0) {
		return
	}
	signal.Ignore(syscall.SIGTTOU)
	defer signal.Reset(syscall.SIGTTOU)
	unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, unix.Getpgrp())
}
