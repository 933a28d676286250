// Command nsrun runs a command in a fresh network namespace connected to
// the outside through NAT, and removes everything when the command exits,
// also on Ctrl-C or SIGTERM (which it passes on to the command first).
//
//	sudo go run ./examples/nsrun -uplink eth0 -- curl -sI https://example.org
//	sudo go run ./examples/nsrun -private -- ping -c1 203.0.113.1
//
// -private runs it inside a private world instead of the real host (see
// examples/tutorial), where 203.0.113.1 is the outside host. The exit status
// is the command's.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

func main() {
	uplink := flag.String("uplink", "", "host link to NAT through (default: the default route's)")
	cidr := flag.String("cidr", "10.200.0.0/24", "the namespace's network")
	priv := flag.Bool("private", false, "run inside a private world with a fake outside host 203.0.113.1")
	verbose := flag.Bool("v", false, "say what was set up")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: nsrun [flags] -- CMD [ARGS...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	prefix, err := netip.ParsePrefix(*cidr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nsrun:", err)
		os.Exit(2)
	}
	var w *nstest.World
	if *priv {
		// Re-runs this program inside private namespaces; returns only there.
		if w, err = nstest.Isolate(); err != nil {
			fmt.Fprintln(os.Stderr, "nsrun:", err)
			os.Exit(1)
		}
		if *uplink == "" {
			*uplink = w.Uplink
		}
	}
	code, err := run(*uplink, prefix, *verbose, flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "nsrun:", err)
	}
	if w != nil {
		w.Close() // os.Exit runs no deferred calls
	}
	os.Exit(code)
}

func run(uplink string, prefix netip.Prefix, verbose bool, argv []string) (int, error) {
	// Catch signals before anything exists, so none can kill us between
	// Connect and the deferred Close.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	ns, err := netns.NewAnonymous()
	if err != nil {
		return 1, err
	}
	defer ns.Close()
	l, err := nat.Connect(ns, uplink, prefix)
	if err != nil {
		return 1, err
	}
	defer func() {
		if err := l.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "nsrun:", err)
		}
	}()
	if verbose {
		fmt.Fprintln(os.Stderr, "nsrun: connected", l)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := ns.Start(cmd); err != nil {
		return 127, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			cmd.Process.Signal(s)
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return 128 + int(ws.Signal()), nil
				}
				return ee.ExitCode(), nil
			}
			return 0, err
		}
	}
}
