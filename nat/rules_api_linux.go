package nat

import (
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

// AddRules masquerades cidr leaving by uplink and forwards the traffic of
// the link hostVeth (in host; nil: the current namespace), with the same
// rules and isolation as Connect ("iptables -t nat -A POSTROUTING -s CIDR
// -o UPLINK -j MASQUERADE", the two FORWARD rules, and forwarding on). An
// empty uplink means the link of the default route. hostVeth must exist,
// and the host must route cidr through it (an address in cidr on hostVeth
// does that): packets from the link whose source would not be routed back
// out of it are dropped as spoofed. Overlap with the host's routes is
// not checked (the caller's own address on hostVeth makes one), overlap
// with other live Links and Rules is. A failure part-way undoes what was
// done, hostVeth's forwarding included.
func AddRules(host *netns.Handle, hostVeth, uplink string, cidr netip.Prefix) (*Rules, error) {
	r, err := addRules(host, hostVeth, uplink, cidr)
	if err != nil {
		return nil, fmt.Errorf("nat: add rules %v dev %s: %w", cidr, hostVeth, err)
	}
	return r, nil
}

func addRules(host *netns.Handle, hostVeth, uplink string, cidr netip.Prefix) (*Rules, error) {
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
	if host != nil && host.Fd() < 0 {
		return nil, fmt.Errorf("host namespace: %w", netns.ErrClosed)
	}
	hs := hostFor(host.ID())
	hs.enter()
	r := &Rules{Prefix: cidr, HostVeth: hostVeth}
	r.hs = hs
	reserved := false
	var undoForwarding func() // set once the link's forwarding was turned on
	fail := func(err error) (*Rules, error) {
		if undoForwarding != nil {
			undoForwarding()
		}
		if reserved {
			release(r.hostKey, 0, cidr)
		}
		leave(hs, host)
		r.host.Close()
		return nil, err
	}
	hc, err := hs.conn(host)
	if err != nil {
		return fail(err)
	}
	defer hs.putConn(hc)
	up, err := inspectHost(hs, host, hc, uplink, cidr, false)
	if err != nil {
		return fail(err)
	}
	msgs, err := hc.Query(nl.GetLinkByName(hostVeth))
	if err != nil {
		return fail(fmt.Errorf("link %q: %w", hostVeth, err))
	}
	link, err := nl.DecodeLink(msgs[0].Data)
	if err != nil {
		return fail(fmt.Errorf("link %q: %w", hostVeth, err))
	}
	vethIdx := int(link.Index)
	wasOn, _ := nl.Forwarding(msgs[0].Data)
	r.Uplink, r.hostKey, r.uplinkIdx = up.name, host.ID(), up.index
	if _, err = reserve(r.hostKey, 0, cidr); err != nil {
		return fail(err)
	}
	reserved = true
	if r.host, err = dupHandle(host); err != nil {
		return fail(err)
	}
	if err := hc.Exec(nl.SetForwarding(vethIdx, true)); err != nil {
		return fail(fmt.Errorf("forwarding: %w", err))
	}
	if !wasOn {
		undoForwarding = func() { hc.Exec(nl.SetForwarding(vethIdx, false)) }
	}
	r.elems = linkElements(r.Prefix, r.HostVeth, r.Uplink, ownerMark, false)
	if err := hs.prepareTable(host)(); err != nil {
		return fail(fmt.Errorf("nftables table: %w", err))
	}
	if err := hs.acquireUplink(hc, host, up, r.elems); err != nil {
		return fail(err)
	}
	return r, nil
}

// Close removes the rules' set entries (and the library's table after the
// last user) and restores the uplink's forwarding after its last user.
// Forwarding on HostVeth stays: the link is the caller's. Idempotent.
func (r *Rules) Close() error { return r.owned.close(r.Prefix, "", r.Uplink) }
