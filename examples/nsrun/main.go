//go:build linux

// Command nsrun runs a command in a fresh network namespace connected to
// the outside through NAT, and removes everything when the command exits:
// the namespace, its link, rules and DNS configuration, and any process
// the command left running in it.
//
//	sudo go run ./examples/nsrun -- curl -sI https://example.org
//	sudo go run ./examples/nsrun -name box -- sleep 600   # ip netns exec box ... meanwhile
//	go run ./examples/nsrun -private -- curl -s http://outside.test/   # no root needed
//
// It needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN). Names resolve as on the
// host (nat.Config.DNS: the host's servers, systemd-resolved's upstream
// servers, or a relay to a resolver on the host's loopback); -dns names
// the servers instead. The command gets the terminal (it is the foreground
// process group): Ctrl-C reaches it once, and nsrun passes on the signals
// sent to nsrun itself. The exit status is the command's (128+N if signal
// N ended it).
//
// -private runs it inside a private world instead of the real host: an
// uplink up0 and an outside host 203.0.113.1 that serves DNS
// (outside.test) and HTTP (a line of text).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"golang.org/x/sys/unix"
)

func main() {
	uplink := flag.String("uplink", "", "host link to NAT through (default: the default route's)")
	cidr := flag.String("cidr", "10.200.0.0/24", "the namespace's network")
	name := flag.String("name", "", "name the namespace (ip netns exec NAME works while the command runs)")
	dns := flag.String("dns", "", "comma-separated name servers for the namespace (default: as the host resolves)")
	keep := flag.Bool("keep", false, "leave processes the command started in the background running (they lose the network)")
	priv := flag.Bool("private", false, "run inside a private world with a fake outside host 203.0.113.1")
	verbose := flag.Bool("v", false, "say what was set up")
	flag.Usage = func() {
		fmt.Fprint(os.Stderr, `usage: sudo nsrun [flags] -- CMD [ARGS...]

Runs CMD in a fresh network namespace with NAT to the outside, and removes
everything when it exits. Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN).
Names resolve as on the host unless -dns is given. The namespace is
anonymous unless -name is given.

`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	cfg := nat.Config{}
	prefix, err := netip.ParsePrefix(*cidr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nsrun:", err)
		os.Exit(2)
	}
	if *dns != "" {
		cfg.DNS = nat.DNSServers
		for _, s := range strings.Split(*dns, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				fmt.Fprintln(os.Stderr, "nsrun: -dns:", err)
				os.Exit(2)
			}
			cfg.DNSServers = append(cfg.DNSServers, a)
		}
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
		if err := privateOutside(w, &cfg); err != nil {
			fmt.Fprintln(os.Stderr, "nsrun:", err)
			os.Exit(1)
		}
	}
	code, err := run(cfg, *uplink, prefix, *name, *keep, *verbose, flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "nsrun:", err)
	}
	if w != nil {
		w.Close() // os.Exit runs no deferred calls
	}
	os.Exit(code)
}

// privateOutside gives the private world's outside host a name server for
// outside.test and a web page, and the namespace that name server.
func privateOutside(w *nstest.World, cfg *nat.Config) error {
	if _, err := nstest.ServeDNS(w.Inet, w.Outside.String()+":53", map[string]netip.Addr{"outside.test": w.Outside}); err != nil {
		return err
	}
	l, err := w.Inet.Listen("tcp", w.Outside.String()+":80")
	if err != nil {
		return err
	}
	go http.Serve(l, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		io.WriteString(rw, "hello from the outside host\n")
	}))
	if cfg.DNS == nat.DNSAuto {
		cfg.DNS, cfg.DNSServers = nat.DNSServers, []netip.Addr{w.Outside}
	}
	return nil
}

func run(cfg nat.Config, uplink string, prefix netip.Prefix, name string, keep, verbose bool, argv []string) (int, error) {
	// Catch signals before anything exists, so none can kill us between
	// Connect and the deferred Close.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	var ns *netns.Handle
	var err error
	if name != "" {
		ns, err = netns.New(name)
		defer netns.Delete(name)
	} else {
		ns, err = netns.NewAnonymous()
	}
	if err != nil {
		return 1, err
	}
	defer ns.Close()
	l, err := cfg.Connect(ns, uplink, prefix)
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
	if !keep {
		// Whatever the command leaves running in the namespace goes too.
		defer killAll(ns)
	}

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The command's own process group, given the terminal if there is
	// one: Ctrl-C reaches the command alone, once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	tty := isTerminal(0)
	if tty {
		cmd.SysProcAttr.Foreground, cmd.SysProcAttr.Ctty = true, 0
		defer takeTerminalBack()
	}
	if err := ns.Start(cmd); err != nil {
		return 127, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			cmd.Process.Signal(s) // sent to nsrun itself: passed on
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

func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// takeTerminalBack makes nsrun's process group the terminal's foreground
// group again (SIGTTOU, which a background group gets for that, ignored).
func takeTerminalBack() {
	signal.Ignore(syscall.SIGTTOU)
	defer signal.Reset(syscall.SIGTTOU)
	unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, unix.Getpgrp())
}

// killAll kills every process in ns's network namespace (found by
// /proc/PID/ns/net) until none is left, or for at most a second.
func killAll(ns *netns.Handle) {
	want := fmt.Sprintf("net:[%d]", ns.ID())
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		ents, _ := os.ReadDir("/proc")
		found := false
		for _, e := range ents {
			var pid int
			if _, err := fmt.Sscan(e.Name(), &pid); err != nil || pid == os.Getpid() {
				continue
			}
			if got, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && got == want {
				syscall.Kill(pid, syscall.SIGKILL)
				found = true
			}
		}
		if !found {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
