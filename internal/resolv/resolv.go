// Package resolv reads and writes resolv.conf files (resolv.conf(5)): the
// name servers, search domains and options that nsnet gives a connected
// namespace.
package resolv

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// Conf is what a resolv.conf says.
type Conf struct {
	Servers []netip.Addr
	Search  []string // "search" (or "domain") domains, in order
	Options []string // "options" words, as written
}

// Parse reads a resolv.conf text. Unknown lines are left out; so are
// servers that are not addresses (with a zone, for example).
func Parse(b []byte) Conf {
	var c Conf
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], ";") {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) > 1 {
				if a, err := netip.ParseAddr(f[1]); err == nil && a.Zone() == "" {
					c.Servers = append(c.Servers, a.Unmap())
				}
			}
		case "search", "domain": // the last of them wins, as in glibc
			c.Search = append([]string(nil), f[1:]...)
		case "options":
			c.Options = append(c.Options, f[1:]...)
		}
	}
	return c
}

// Read parses the file at path.
func Read(path string) (Conf, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Conf{}, err
	}
	return Parse(b), nil
}

// Format writes c as a resolv.conf text, after a comment line (without
// its "# ").
func (c Conf) Format(comment string) []byte {
	var b bytes.Buffer
	if comment != "" {
		fmt.Fprintf(&b, "# %s\n", comment)
	}
	for _, s := range c.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(c.Search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(c.Search, " "))
	}
	if len(c.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(c.Options, " "))
	}
	return b.Bytes()
}

// Loopback reports whether every server of c is a loopback address (and
// there is at least one): servers a namespace cannot reach.
func (c Conf) Loopback() bool {
	for _, s := range c.Servers {
		if !s.IsLoopback() {
			return false
		}
	}
	return len(c.Servers) > 0
}

// Reachable returns c without its loopback servers.
func (c Conf) Reachable() Conf {
	out := c
	out.Servers = nil
	for _, s := range c.Servers {
		if !s.IsLoopback() {
			out.Servers = append(out.Servers, s)
		}
	}
	return out
}
