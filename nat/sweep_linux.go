package nat

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// owner is a parsed owner mark: "nsnet pid=P start=S".
type owner struct {
	pid   int
	start uint64
}

func parseOwner(mark string) (owner, bool) {
	var o owner
	mark, _, _ = strings.Cut(mark, " orig=")
	if _, err := fmt.Sscanf(mark, "nsnet pid=%d start=%d", &o.pid, &o.start); err != nil || o.pid <= 0 {
		return o, false
	}
	return o, true
}

// alive reports whether the process that wrote the mark still runs: the
// pid exists and started at the same time (a reused pid did not).
func (o owner) alive() bool {
	return processStart(o.pid) == o.start
}

// Sweep removes what dead processes left behind in host (nil: the current
// namespace): processes killed or crashed before they closed their Links.
// It finds the library's marks — the host veth's ifalias and the comment of
// every set entry, "nsnet pid=P start=S" — and removes the veths and entries
// of owners that no longer run (a pid reused by another process does not
// count as alive: its start time differs), turns forwarding off again on
// uplinks that a dead owner had turned on and no live one uses, and removes
// the table if nothing is left in it. What live processes own is not
// touched. Safe to run at any time, for example at program start.
//
// A process killed in the middle of Connect, between creating a veth pair
// with a name it was given and marking it, leaves an unmarked pair that
// Sweep cannot attribute and leaves alone.
func Sweep(host *netns.Handle) (SweepResult, error) {
	var res SweepResult
	hc, err := nl.Dial(host)
	if err != nil {
		return res, fmt.Errorf("nat: sweep: %w", err)
	}
	defer hc.Close()

	// Links.
	msgs, err := hc.Query(nl.DumpLinks())
	if err != nil {
		return res, fmt.Errorf("nat: sweep: links: %w", err)
	}
	var dels []nl.Request
	for _, m := range msgs {
		link, err := nl.DecodeLink(m.Data)
		if err != nil || link.Attributes.Alias == nil {
			continue
		}
		if o, ok := parseOwner(*link.Attributes.Alias); ok && !o.alive() {
			dels = append(dels, nl.DeleteLink(int(link.Index), ""))
			res.Links = append(res.Links, link.Attributes.Name)
		}
	}
	var errs []error
	if len(dels) > 0 {
		if err := hc.Exec(dels...); err != nil {
			errs = append(errs, fmt.Errorf("links: %w", err))
		}
	}

	// Set entries, forwarding, table.
	var socks nftSockets
	defer socks.close()
	c, err := socks.conn(host)
	if err != nil {
		return res, fmt.Errorf("nat: sweep: %w", errors.Join(append(errs, err)...))
	}
	if _, err := c.ListTableOfFamily(TableName, nftables.TableFamilyIPv4); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return res, sweepErr(errs) // no table: nothing more of ours
		}
		return res, fmt.Errorf("nat: sweep: %w", errors.Join(append(errs, err)...))
	}
	dead := elements{}
	left := 0
	for _, set := range sets {
		if set.Name == setFwd {
			continue // below, per uplink
		}
		els, err := c.GetSetElements(set)
		if err != nil {
			return res, fmt.Errorf("nat: sweep: set %s: %w", set.Name, errors.Join(append(errs, err)...))
		}
		var gone []nftables.SetElement
		for _, e := range els {
			if o, ok := parseOwner(e.Comment); ok && !o.alive() {
				gone = append(gone, e)
			} else {
				left++
			}
		}
		switch set.Name {
		case setLinks:
			dead.links = gone
		case setMasq:
			dead.masq = gone
		case setSiblings:
			dead.siblings = gone
		}
		res.Elements += len(gone)
	}
	if res.Elements > 0 {
		if err := dead.apply(c, false); err == nil {
			err = c.Flush()
			if err != nil {
				errs = append(errs, fmt.Errorf("set entries: %w", err))
			}
		} else {
			errs = append(errs, err)
		}
	}
	// Uplink forwarding: an uplink whose users are all dead goes back to
	// its original setting, under the same lock the users take.
	err = withHostLock(host, func() error {
		entries, err := readFwd(c, "")
		if err != nil {
			return err
		}
		byUplink := map[string][]fwdEntry{}
		for _, e := range entries {
			byUplink[e.uplink] = append(byUplink[e.uplink], e)
		}
		var gone []nftables.SetElement
		for up, es := range byUplink {
			live, wasOff := false, false
			for _, e := range es {
				live = live || e.alive
				wasOff = wasOff || e.origOff
			}
			if live {
				// Users remain: only the dead ones' records go.
				for _, e := range es {
					if e.alive {
						left++
					} else {
						gone = append(gone, e.el)
					}
				}
				continue
			}
			for _, e := range es {
				gone = append(gone, e.el)
			}
			if !wasOff {
				continue
			}
			if idx, err := hc.LinkIndex(up); err == nil {
				if err := hc.Exec(nl.SetForwarding(idx, false)); err != nil {
					return fmt.Errorf("uplink %s forwarding: %w", up, err)
				}
				res.Uplinks = append(res.Uplinks, up)
			}
		}
		if len(gone) == 0 {
			return nil
		}
		if err := c.SetDeleteElements(setByName[setFwd], gone); err != nil {
			return err
		}
		res.Elements += len(gone)
		return c.Flush()
	})
	if err != nil {
		errs = append(errs, err)
	}
	if left == 0 && len(errs) == 0 {
		// The same generation-checked delete as after a last Close: a
		// process adding its entries meanwhile keeps the table.
		dropped, err := hostFor(host.ID()).dropTableIfUnused(host, &socks)
		if err != nil {
			errs = append(errs, fmt.Errorf("table: %w", err))
		}
		res.Table = dropped
	}
	return res, sweepErr(errs)
}

func sweepErr(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("nat: sweep: %w", errors.Join(errs...))
}
