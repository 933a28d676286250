//go:build linux

package main

import (
	"fmt"
	"io"
	"os"
)

// commands are nsnet's subcommands, each with its one-line summary.
var commands = []struct {
	name, summary string
	main          func(args []string, stdout, stderr io.Writer) int
}{
	{"run", "run a command in a new network namespace with NAT to the outside", runMain},
	{"ls", "list the links nsnet made on this host, of every process", lsMain},
	{"sweep", "remove what dead nsnet processes left on this host", sweepMain},
	{"version", "print nsnet's version", versionMain},
}

func main() {
	os.Exit(nsnet(os.Args[1:], os.Stdout, os.Stderr))
}

// nsnet runs the command line args and returns the exit status.
func nsnet(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == initArg {
		return initMain(args[1:])
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		w, code := stderr, 2
		if len(args) > 0 {
			w, code = stdout, 0
		}
		usage(w)
		return code
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.main(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "nsnet: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, "usage: nsnet COMMAND [FLAGS] [ARGS...]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nRun 'nsnet COMMAND -h' for a command's flags.\n")
}
