package uplinks

// IPv6's global switch. Before Linux 6.17 IPv6 has no per-interface
// forwarding: net.ipv6.conf.IF.forwarding makes an interface a router for
// neighbour discovery without forwarding anything, and only
// net.ipv6.conf.all.forwarding forwards, between every interface. Turning
// it on also makes every interface with accept_ra=1 ignore router
// advertisements (a SLAAC host loses its default route), and turning it
// off again writes 0 into every interface's forwarding and default's.
//
// So, opted in (nat.Config.IPv6GlobalForwarding), the global switch is
// shared as an uplink's forwarding is (Key{0, IPv6}), and its first user
// records, in the opened set, what the switch changes: an entry per
// interface whose accept_ra is 1 or forwarding 1 ("INDEX . ipv6", comment
// "nsnet v6global ra=1 fwd=0": the values before), default's in the
// switch's own entry ("0 . ipv6"). Then it sets accept_ra=2 (accept
// router advertisements even when forwarding) on default and on those
// interfaces, and the switch on. The switch's opened entry makes the
// forward chain drop every forwarded IPv6 packet that is not a link's: the
// host forwards nothing it did not before. The last user (or Sweep, after
// a crash) turns the switch off and puts back every recorded value that
// still reads as nsnet left it. An interface that appears meanwhile gets
// default's accept_ra=2 and keeps it: with forwarding off, 2 behaves as 1.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// GlobalV6 is the key of IPv6's global switch.
var GlobalV6 = Key{0, unix.NFPROTO_IPV6}

// recordTag starts the comment of a record of the global switch.
const recordTag = "nsnet v6global"

// v6conf is what the global switch changes of one interface (or default).
type v6conf struct {
	index      int
	name       string
	acceptRA   string
	forwarding string
}

func (c v6conf) comment() string {
	return fmt.Sprintf("%s ra=%s fwd=%s", recordTag, c.acceptRA, c.forwarding)
}

func (c v6conf) elem() nftset.Elem {
	return nftset.Elem{Set: nftset.SetOpened, Key: nftset.FamKey(c.index, unix.NFPROTO_IPV6), Comment: c.comment()}
}

// parseRecord reads a record entry of the opened set; ok is false for any
// other entry.
func parseRecord(key []byte, comment string) (c v6conf, ok bool) {
	rest, found := strings.CutPrefix(comment, recordTag+" ")
	if !found || len(key) < 5 || key[4] != unix.NFPROTO_IPV6 {
		return c, false
	}
	c.index = int(binary.NativeEndian.Uint32(key[:4]))
	for _, f := range strings.Fields(rest) {
		if v, ok := strings.CutPrefix(f, "ra="); ok {
			c.acceptRA = v
		} else if v, ok := strings.CutPrefix(f, "fwd="); ok {
			c.forwarding = v
		}
	}
	return c, true
}

// readConfs reads accept_ra and forwarding of default and of every
// interface of host with IPv6, in one thread switch.
func readConfs(host *netns.Handle, hc *nl.Conn) (dflt v6conf, ifs []v6conf, err error) {
	names, err := linkNames(hc)
	if err != nil {
		return dflt, nil, err
	}
	for index, name := range names {
		ifs = append(ifs, v6conf{index: index, name: name})
	}
	dflt.name = "default"
	err = nl.Do(host, func() error {
		read := func(c *v6conf) error {
			ra, err := os.ReadFile(nl.ConfPath(unix.NFPROTO_IPV6, c.name, "accept_ra"))
			if err != nil {
				return err
			}
			fwd, err := os.ReadFile(nl.ConfPath(unix.NFPROTO_IPV6, c.name, "forwarding"))
			c.acceptRA, c.forwarding = strings.TrimSpace(string(ra)), strings.TrimSpace(string(fwd))
			return err
		}
		if err := read(&dflt); err != nil {
			return err
		}
		for i := range ifs {
			read(&ifs[i]) // (none: IPv6 off on the link, or gone meanwhile)
		}
		return nil
	})
	return dflt, ifs, err
}

// linkNames are the names of host's links by index, from one dump.
func linkNames(hc *nl.Conn) (map[int]string, error) {
	msgs, err := hc.Dump(nl.DumpLinks())
	if err != nil {
		return nil, err
	}
	names := make(map[int]string, len(msgs))
	for _, m := range msgs {
		if l, err := nl.DecodeLink(m.Data); err == nil {
			names[int(l.Index)] = l.Attributes.Name
		}
	}
	return names, nil
}

// globalRecords are the records of what turning the switch on changes:
// the switch's opened entry first, with default's values.
func globalRecords(host *netns.Handle, hc *nl.Conn) ([]nftset.Elem, error) {
	dflt, ifs, err := readConfs(host, hc)
	if err != nil {
		return nil, fmt.Errorf("IPv6 settings: %w", err)
	}
	recs := []nftset.Elem{dflt.elem()}
	for _, c := range ifs {
		if c.acceptRA == "1" || c.forwarding == "1" {
			recs = append(recs, c.elem())
		}
	}
	return recs, nil
}

// ReadGlobalRecords reads the global switch's records from the opened
// set (none if nsnet did not turn it on).
func ReadGlobalRecords(c *nftables.Conn) ([]nftset.Elem, error) {
	els, err := c.GetSetElements(nftset.ByName[nftset.SetOpened])
	if err != nil {
		return nil, err
	}
	var recs []nftset.Elem
	for _, e := range els {
		if _, ok := parseRecord(e.Key, e.Comment); ok {
			recs = append(recs, nftset.Elem{Set: nftset.SetOpened, Key: e.Key, Comment: e.Comment})
		}
	}
	return recs, nil
}

// switchGlobal turns the switch on (see the top of the file) or, off, puts
// back what the records say. Interfaces are named by their index now (a
// renamed one keeps its record; a deleted one has nothing to put back).
func switchGlobal(host *netns.Handle, hc *nl.Conn, recs []nftset.Elem, on bool) error {
	names, err := linkNames(hc)
	if err != nil {
		return err
	}
	var confs []v6conf
	var dflt *v6conf
	for _, r := range recs {
		c, ok := parseRecord(r.Key, r.Comment)
		if !ok {
			continue
		}
		if c.index == 0 {
			c.name, dflt = "default", &c
			continue
		}
		if name, ok := names[c.index]; ok {
			c.name = name
			confs = append(confs, c)
		}
	}
	path := func(dev, name string) string { return nl.ConfPath(unix.NFPROTO_IPV6, dev, name) }
	write := func(p, v string) error { return os.WriteFile(p, []byte(v+"\n"), 0) }
	// read reports whether p reads v.
	read := func(p, v string) bool {
		b, err := os.ReadFile(p)
		return err == nil && strings.TrimSpace(string(b)) == v
	}
	return nl.Do(host, func() error {
		var errs []error
		if on {
			// Default first: a link that appears meanwhile gets 2.
			if dflt != nil && dflt.acceptRA == "1" {
				errs = append(errs, write(path("default", "accept_ra"), "2"))
			}
			for _, c := range confs {
				if c.acceptRA == "1" && read(path(c.name, "accept_ra"), "1") {
					errs = append(errs, write(path(c.name, "accept_ra"), "2"))
				}
			}
			if err := errors.Join(errs...); err != nil {
				return err
			}
			return write(path("all", "forwarding"), "1")
		}
		// Off: every interface's forwarding and default's go to 0 with it.
		errs = append(errs, write(path("all", "forwarding"), "0"))
		for _, c := range confs {
			if c.forwarding == "1" {
				errs = append(errs, write(path(c.name, "forwarding"), "1"))
			}
			if c.acceptRA == "1" && read(path(c.name, "accept_ra"), "2") {
				errs = append(errs, write(path(c.name, "accept_ra"), "1"))
			}
		}
		if dflt != nil {
			if dflt.forwarding == "1" {
				errs = append(errs, write(path("default", "forwarding"), "1"))
			}
			if dflt.acceptRA == "1" && read(path("default", "accept_ra"), "2") {
				errs = append(errs, write(path("default", "accept_ra"), "1"))
			}
		}
		return errors.Join(errs...)
	})
}
