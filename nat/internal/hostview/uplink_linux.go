package hostview

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/naterr"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// Need is what a link needs of the host.
type Need struct {
	Uplink       string         // the uplink's name; "" for the default route's link
	DefaultFam   byte           // the family whose default route names the uplink when Uplink is ""
	Prefixes     []netip.Prefix // checked against the host's routes and addresses (none: no check)
	Masq4, Masq6 bool           // families masqueraded: the uplink needs an address of each
}

// Uplink is the link a namespace's traffic leaves by.
type Uplink struct {
	Name  string
	Index int
}

// Uplink finds the uplink (or the default route's link), checks it is up
// with an address for each family it masquerades (IPv4, or a global IPv6
// one), and that need's prefixes overlap no route or address of the host
// (the local table lists the host's own addresses). The overlap error
// names the holder.
func (v *View) Uplink(host *netns.Handle, hc *nl.Conn, need Need) (Uplink, error) {
	upIdx := 0
	var linkMsg []byte
	if need.Uplink != "" {
		msgs, err := hc.Query(nl.GetLinkByName(need.Uplink))
		if errors.Is(err, os.ErrNotExist) {
			return Uplink{}, fmt.Errorf("uplink %q does not exist in the host namespace (%s): %w", need.Uplink, candidates(hc), err)
		}
		if err != nil {
			return Uplink{}, fmt.Errorf("uplink %q: %w", need.Uplink, err)
		}
		linkMsg = msgs[0].Data
		l, err := nl.DecodeLink(linkMsg)
		if err != nil {
			return Uplink{}, err
		}
		upIdx = int(l.Index)
	}
	facts, err := v.Ask(host, hc, need.Prefixes, upIdx, need.DefaultFam)
	if err != nil {
		return Uplink{}, fmt.Errorf("host routes: %w", err)
	}
	upIdx = facts.Uplink
	if need.Uplink == "" {
		fam := nftset.FamilyName(need.DefaultFam)
		switch {
		case len(facts.Defaults) == 0:
			return Uplink{}, fmt.Errorf("no uplink given and the host has no %s default route: name the uplink: %w", fam, nl.Wrap(unix.ENODEV))
		case len(facts.Defaults) > 1 || upIdx == 0:
			return Uplink{}, fmt.Errorf("%w: no uplink given and the host's %s default route leaves by several links (interface indexes %v): name the uplink", naterr.ErrInvalidConfig, fam, facts.Defaults)
		}
		msgs, err := hc.Query(nl.GetLinkByIndex(upIdx))
		if err != nil {
			return Uplink{}, fmt.Errorf("default route's link: %w", err)
		}
		linkMsg = msgs[0].Data
	}
	link, err := nl.DecodeLink(linkMsg)
	if err != nil {
		return Uplink{}, err
	}
	up := Uplink{Name: link.Attributes.Name, Index: int(link.Index)}
	switch {
	case link.Flags&unix.IFF_LOOPBACK != 0:
		return up, fmt.Errorf("%w: uplink %q is a loopback link: nothing leaves by it", naterr.ErrInvalidConfig, up.Name)
	case link.Flags&unix.IFF_UP == 0:
		return up, fmt.Errorf("uplink %q is down: bring it up first", up.Name)
	case link.Attributes.Alias != nil && strings.HasPrefix(*link.Attributes.Alias, "nsnet "):
		return up, fmt.Errorf("%w: uplink %q is the host end of an nsnet link", naterr.ErrInvalidConfig, up.Name)
	case need.Masq4 && !facts.HasV4:
		return up, fmt.Errorf("uplink %q has no IPv4 address: masquerading needs one", up.Name)
	case need.Masq6 && !facts.HasV6:
		return up, fmt.Errorf("uplink %q has no global IPv6 address: masquerading IPv6 needs one (or set RoutedIPv6)", up.Name)
	}
	if facts.Overlap != nil {
		return up, overlapErr(host, hc, *facts.Overlap)
	}
	return up, nil
}

// overlapErr is the ErrOverlap for route k of the host, naming the link it
// belongs to and, for one of nsnet's, its owner; it also matches
// ErrDeadHolder when that owner is dead.
func overlapErr(host *netns.Handle, hc *nl.Conn, k RouteKey) error {
	what := "route"
	if k.Type == unix.RTN_LOCAL {
		what = "address"
	}
	err := fmt.Errorf("%w: host %s %v", naterr.ErrOverlap, what, k.Dst)
	if k.OIF == 0 {
		return err
	}
	msgs, qerr := hc.Query(nl.GetLinkByIndex(k.OIF))
	if qerr != nil {
		return err
	}
	link, derr := nl.DecodeLink(msgs[0].Data)
	if derr != nil {
		return err
	}
	holder := fmt.Sprintf("link %s", link.Attributes.Name)
	if link.Attributes.Alias != nil {
		if o, ok := owner.Parse(*link.Attributes.Alias); ok {
			live, lerr := owner.Live(host, []string{o.ID})
			switch {
			case lerr != nil:
			case live[o.ID]:
				holder += fmt.Sprintf(" of live pid %d (nsnet owner %s)", o.PID, o.ID)
			default:
				return fmt.Errorf("%w: host %s %v of link %s, %w (pid %d, owner %s)", naterr.ErrOverlap, what, k.Dst, link.Attributes.Name, naterr.ErrDeadHolder, o.PID, o.ID)
			}
		}
	}
	return fmt.Errorf("%w: host %s %v of %s", naterr.ErrOverlap, what, k.Dst, holder)
}

// candidates names the host's links that could be uplinks (up, not
// loopback, not an nsnet host end), for an error about a missing one.
func candidates(hc *nl.Conn) string {
	msgs, err := hc.Dump(nl.DumpLinks())
	if err != nil {
		return "its links could not be listed"
	}
	var names []string
	for _, m := range msgs {
		l, err := nl.DecodeLink(m.Data)
		switch {
		case err != nil, l.Flags&unix.IFF_LOOPBACK != 0, l.Flags&unix.IFF_UP == 0:
		case l.Attributes.Alias != nil && strings.HasPrefix(*l.Attributes.Alias, "nsnet "):
		default:
			names = append(names, l.Attributes.Name)
		}
	}
	if len(names) == 0 {
		return "it has no link that is up besides loopback"
	}
	slices.Sort(names)
	return "links up there: " + strings.Join(names, ", ")
}
