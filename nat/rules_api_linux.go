package nat

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
)

// Rules is the tutorial's iptables and sysctl step on its own, for a veth
// pair made by hand: the link's entries in the library's nftables table and
// IPv4 forwarding on its host end and the uplink. Connect does this itself;
// use AddRules when building the rest with the veth, addr and route
// packages. Close removes exactly what AddRules added.
type Rules struct {
	Prefix   netip.Prefix // the namespace's network behind HostVeth
	HostVeth string       // host end of the pair, made by the caller
	Uplink   string       // the host link the traffic leaves by
	owned
}

// AddRules masquerades the traffic of the link hostVeth (in host; nil: the
// current namespace) leaving by uplink, and forwards it, with the same
// rules and isolation as Connect ("iptables -t nat -A POSTROUTING -s CIDR
// -o UPLINK -j MASQUERADE", the two FORWARD rules, and forwarding on). An
// empty uplink means the link of the default route. hostVeth must exist,
// and the host must route cidr through it (an address in cidr on hostVeth
// does that): packets from the link whose source would not be routed back
// out of it are dropped as spoofed. Links are matched by interface index:
// the rules follow hostVeth and the uplink through renames. Overlap with
// the host's routes is not checked (the caller's own address on hostVeth
// makes one); overlap with other live Links and Rules, of any process, is.
// One Rules per link: a second AddRules for the same hostVeth while the
// first is live fails with an error matching os.ErrExist. A failure
// part-way undoes what was done, hostVeth's forwarding included.
func AddRules(host *netns.Handle, hostVeth, uplink string, cidr netip.Prefix) (*Rules, error) {
	r, err := addRules(host, hostVeth, uplink, cidr)
	if err != nil {
		return nil, fmt.Errorf("nat: add rules %v dev %s: %w", cidr, hostVeth, err)
	}
	return r, nil
}

func addRules(hostNS *netns.Handle, hostVeth, uplink string, cidr netip.Prefix) (_ *Rules, err error) {
	if err := validPrefix(cidr); err != nil {
		return nil, err
	}
	if err := nl.CheckIfName(hostVeth); err != nil {
		return nil, err
	}
	if uplink != "" {
		if err := nl.CheckIfName(uplink); err != nil {
			return nil, fmt.Errorf("uplink: %w", err)
		}
	}
	if hostNS != nil && hostNS.Fd() < 0 {
		return nil, fmt.Errorf("host namespace: %w", netns.ErrClosed)
	}
	host, err := resolveHost(hostNS)
	if err != nil {
		return nil, fmt.Errorf("host namespace: %w", err)
	}
	var undo undoStack
	defer func() {
		if err != nil {
			undo.unwind()
		}
	}()
	undo.push(func() { host.Close() })
	r := &Rules{Prefix: cidr, HostVeth: hostVeth}
	r.host, r.hostKey, r.vethName = host, host.ID(), hostVeth
	if err := reserve(r.hostKey, 0, cidr); err != nil {
		return nil, err
	}
	undo.push(func() { release(r.hostKey, 0, cidr) })
	hs, err := enter(host, r.hostKey)
	if err != nil {
		return nil, err
	}
	r.hs = hs
	undo.push(func() { hs.leaveNow(host) })
	if err := hs.ensureTable(host); err != nil {
		return nil, fmt.Errorf("nftables table: %w", err)
	}
	hc, err := hs.conn(host)
	if err != nil {
		return nil, err
	}
	defer hs.putConn(hc)
	up, err := inspectHost(hs, host, hc, uplink, cidr, false)
	if err != nil {
		return nil, err
	}
	msgs, err := hc.Query(nl.GetLinkByName(hostVeth))
	if err != nil {
		return nil, fmt.Errorf("link %q: %w", hostVeth, err)
	}
	link, err := nl.DecodeLink(msgs[0].Data)
	if err != nil {
		return nil, fmt.Errorf("link %q: %w", hostVeth, err)
	}
	r.Uplink, r.hostIdx = up.name, int(link.Index)
	if r.hostIdx == up.index {
		return nil, fmt.Errorf("%w: link %s is the uplink itself", ErrInvalidConfig, hostVeth)
	}
	wasOn, _ := nl.Forwarding(msgs[0].Data)
	r.ent = entries{link: r.hostIdx, uplink: up.index, prefix: cidr, mark: ownerMark + " link=" + hostVeth}
	if err := hs.addLink(host, hc, r.ent); err != nil {
		return nil, err
	}
	undo.push(func() { hs.removeLink(host, hc, r.ent) })
	// Forwarding last, once the rules are in place.
	if err := hook("rules forwarding"); err != nil {
		return nil, fmt.Errorf("forwarding: %w", err)
	}
	if err := hc.Exec(nl.SetForwarding(r.hostIdx, true)); err != nil {
		return nil, fmt.Errorf("forwarding: %w", err)
	}
	if !wasOn {
		undo.push(func() { hc.Exec(nl.SetForwarding(r.hostIdx, false)) })
		r.linkFwdOff = true
	}
	hs.addLive(&r.owned)
	return r, nil
}

// Close undoes exactly what AddRules did, from its own record (renames of
// the link or the uplink do not matter): HostVeth's forwarding goes back
// off if AddRules turned it on (first, so that no packet of the link
// leaves once its rules are gone), the link's connection tracking entries
// are forgotten, its set entries removed (and the library's table after
// the last user), and the uplink's forwarding restored after its last
// user. The link itself is the caller's. Idempotent; a nil or zero Rules
// returns an error.
func (r *Rules) Close() error {
	if r == nil {
		return errors.New("nat: close of a nil *Rules")
	}
	return r.owned.close("nat: close rules "+r.owned.what(), false)
}
