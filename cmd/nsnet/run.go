//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

func runMain(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", "-- CMD [ARGS...]", `Runs CMD in a new network namespace connected to the outside through NAT
(nat.Connect), and removes the namespace, its link, rules and DNS files
when CMD exits. CMD runs as PID 1's only child in a PID namespace of its
own: when it exits, or nsnet run is killed (even with SIGKILL), every
process it started goes too. What a killed run leaves on the host (link,
rules, forwarding, a named namespace) is removed by the next nsnet run or
by nsnet sweep. Ctrl-C reaches CMD; signals sent to nsnet run are passed
on. The exit status is CMD's (128+N when signal N ended it).`, stdout, stderr)
	name := fs.String("name", "", "name the namespace (ip netns exec NAME works while CMD runs)")
	uplink := fs.String("uplink", "", "host link to NAT through (default: the default route's)")
	cidr := fs.String("cidr", "", "the namespace's IPv4 network (default: a free /24 of "+nat.DefaultPool.String()+")")
	ipv6 := fs.Bool("6", false, "IPv6 too: a /64 of the host's unique local /48")
	dns := fs.String("dns", "", "comma-separated name servers for the namespace (default: as the host resolves)")
	var ports portFlags
	fs.Var(&ports, "p", "publish a port: [HOST-IP:]HOST-PORT[-END]:NS-PORT[/tcp|udp], as docker run -p (repeatable)")
	verbose := fs.Bool("v", false, "say what was set up, on stderr")
	if code, ok := fs.parse(args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "nsnet run: no command given")
		fs.Usage()
		return 2
	}
	cfg := nat.Config{Ports: ports, AutoPrefix6: *ipv6}
	var prefix netip.Prefix
	if *cidr != "" {
		p, err := netip.ParsePrefix(*cidr)
		if err != nil {
			fmt.Fprintln(stderr, "nsnet run: -cidr:", err)
			return 2
		}
		prefix = p
	}
	if *dns != "" {
		cfg.DNS = nat.DNSServers
		for _, s := range strings.Split(*dns, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				fmt.Fprintln(stderr, "nsnet run: -dns:", err)
				return 2
			}
			cfg.DNSServers = append(cfg.DNSServers, a)
		}
	}
	if *name != "" {
		if err := netns.ValidateName(*name); err != nil {
			fmt.Fprintln(stderr, "nsnet run: -name:", err)
			return 2
		}
	}
	code, err := run(cfg, *uplink, prefix, *name, *verbose, fs.Args(), stderr)
	if err != nil {
		fmt.Fprintln(stderr, "nsnet run:", err)
	}
	return code
}

func run(cfg nat.Config, uplink string, prefix netip.Prefix, name string, verbose bool, argv []string, stderr io.Writer) (int, error) {
	// Catch signals before anything exists, so none can kill us between
	// Connect and the deferred Close.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)

	// What killed runs left: links, rules, forwarding, files, namespaces.
	res, swept, err := sweepAll()
	if err != nil {
		return 1, fmt.Errorf("sweeping what earlier runs left: %w", err)
	}
	if verbose && (len(res.Links) > 0 || res.Elements > 0 || len(swept) > 0) {
		printSweep(stderr, res, swept)
	}
	id, err := claimOwner()
	if err != nil {
		return 1, err
	}
	var ns *netns.Handle
	if name != "" {
		if ns, err = netns.New(name); err != nil {
			return 1, err
		}
		defer netns.Delete(name)
		if err := markRun(ns, id); err != nil {
			ns.Close()
			return 1, fmt.Errorf("marking namespace %s: %w", name, err)
		}
	} else if ns, err = netns.NewAnonymous(); err != nil {
		return 1, err
	}
	defer ns.Close()
	l, err := cfg.Connect(ns, uplink, prefix)
	if err != nil {
		return 1, err
	}
	defer func() {
		if err := l.Close(); err != nil {
			fmt.Fprintln(stderr, "nsnet run:", err)
		}
	}()
	if verbose {
		fmt.Fprintln(stderr, "nsnet run: connected", l)
		for _, p := range l.Ports() {
			fmt.Fprintln(stderr, "nsnet run: published", portString(p))
		}
	}
	return runInit(ns, argv, sigs)
}

// runInit starts this program again as PID 1 of a new PID namespace in
// ns (see initMain), to run argv, and waits for it, passing on the
// signals sent to nsnet run. Pdeathsig kills it if nsnet run dies first.
func runInit(ns *netns.Handle, argv []string, sigs <-chan os.Signal) (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 1, err
	}
	cmd := exec.Command(exe, append([]string{initArg, "--"}, argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	if err := ns.Start(cmd); err != nil {
		return 127, err
	}
	defer takeTerminalBack() // init gave it to the command
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			cmd.Process.Signal(s) // sent to nsnet run itself: passed on (init passes it to CMD)
		case err := <-done:
			return exitCode(err)
		}
	}
}

// exitCode is a finished command's exit status, 128+N if signal N ended
// it, as a shell reports it.
func exitCode(err error) (int, error) {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 1, err
	}
	return 0, nil
}

// portFlags are the -p flags.
type portFlags []nat.Port

func (p *portFlags) String() string { return fmt.Sprint(*p) }

// Set parses docker run -p's form: [HOST-IP:]HOST-PORT[-END]:NS-PORT[/PROTO]
// (an IPv6 host address in brackets), or PORT[/PROTO] for the same port
// on both sides.
func (p *portFlags) Set(s string) error {
	port := nat.Port{Protocol: "tcp"}
	spec, proto, ok := strings.Cut(s, "/")
	if ok {
		port.Protocol = strings.ToLower(proto)
	}
	var host, hostPorts, nsPort string
	if strings.HasPrefix(spec, "[") {
		end := strings.Index(spec, "]:")
		if end < 0 {
			return fmt.Errorf("%q: an IPv6 address in brackets, then :HOST-PORT:NS-PORT", s)
		}
		host, spec = spec[1:end], spec[end+2:]
	}
	f := strings.Split(spec, ":")
	switch {
	case len(f) == 3 && host == "":
		host, hostPorts, nsPort = f[0], f[1], f[2]
	case len(f) == 2:
		hostPorts, nsPort = f[0], f[1]
	case len(f) == 1 && host == "":
		hostPorts, nsPort = f[0], f[0]
	default:
		return fmt.Errorf("%q: want [HOST-IP:]HOST-PORT[-END]:NS-PORT[/tcp|udp]", s)
	}
	if host != "" {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return fmt.Errorf("%q: host address: %w", s, err)
		}
		port.HostAddr = a
	}
	first, last, isRange := strings.Cut(hostPorts, "-")
	hp, err := parsePort(first)
	if err != nil {
		return fmt.Errorf("%q: host port: %w", s, err)
	}
	port.HostPort = hp
	if isRange {
		lp, err := parsePort(last)
		if err != nil || lp < hp {
			return fmt.Errorf("%q: host port range %s", s, hostPorts)
		}
		port.Count = lp - hp + 1
	}
	np, err := parsePort(strings.SplitN(nsPort, "-", 2)[0])
	if err != nil {
		return fmt.Errorf("%q: namespace port: %w", s, err)
	}
	port.NSPort = np
	if port.Protocol != "tcp" && port.Protocol != "udp" {
		return fmt.Errorf("%q: protocol %q is not tcp or udp", s, port.Protocol)
	}
	*p = append(*p, port)
	return nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", s)
	}
	return uint16(n), nil
}

var _ flag.Value = (*portFlags)(nil)
