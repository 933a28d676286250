//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

func versionMain(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", "", "Prints the module version nsnet was built from, its commit and Go's version.", stdout, stderr)
	if code, ok := fs.parse(args); !ok {
		return code
	}
	fmt.Fprintln(stdout, version())
	return 0
}

// version is "nsnet VERSION (COMMIT[, modified]) GOVERSION OS/ARCH", from
// what the Go toolchain recorded in the binary: a go install of a tagged
// module says its tag, a build in a clone "(devel)" and the commit.
func version() string {
	v, rev := "(devel)", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		modified := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
				if len(rev) > 12 {
					rev = rev[:12]
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified {
			rev += ", modified"
		}
	}
	if rev != "" {
		v += " (" + rev + ")"
	}
	return fmt.Sprintf("nsnet %s %s %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// flags is a command's flag set: -h prints its usage (synopsis, what it
// does, the flags) to stdout and exits 0; a usage error prints it to
// stderr and exits 2.
type flags struct {
	*flag.FlagSet
	stdout io.Writer
}

func newFlags(name, synopsis, about string, stdout, stderr io.Writer) flags {
	fs := flag.NewFlagSet("nsnet "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: nsnet %s [FLAGS] %s\n\n%s\n", name, synopsis, about)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprint(w, "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return flags{fs, stdout}
}

// parse parses args; ok is false when the command should exit with code
// (0 after -h, 2 after a usage error).
func (fs flags) parse(args []string) (code int, ok bool) {
	for _, a := range args {
		if a == "--" || !strings.HasPrefix(a, "-") {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(fs.stdout)
			fs.Usage()
			return 0, false
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false // -h after other flags: usage went to stderr
		}
		return 2, false
	}
	return 0, true
}
