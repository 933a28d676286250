package nat

import (
	"context"
	"fmt"
	"net/netip"
	"os"

	"github.com/nsnet/nsnet/nat/internal/addrplan"
	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/nat/internal/nftset"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
)

// sysAddRules is AddRules on Linux.
func sysAddRules(host *netns.Handle, hostVeth, uplink string, cidrs []netip.Prefix) (*Rules, error) {
	r, err := addRules(host, hostVeth, uplink, cidrs)
	if err != nil {
		return nil, fmt.Errorf("nat: add rules %v dev %s: %w", nftset.Entries{Prefixes: cidrs}, hostVeth, err)
	}
	return r, nil
}

func addRules(hostNS *netns.Handle, hostVeth, uplink string, cidrs []netip.Prefix) (_ *Rules, err error) {
	cidrs, err = addrplan.OnePerFamily(cidrs)
	if err != nil {
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
	host, err := openHost(hostNS)
	if err != nil {
		return nil, err
	}
	var undo undoStack
	defer func() {
		if err != nil {
			undo.unwind()
		}
	}()
	undo.push(func() { host.Close() })
	r := &Rules{Prefix: cidrs[0], Prefixes: cidrs, HostVeth: hostVeth, owned: &owned{}}
	r.host, r.hostKey, r.vethName = host, host.ID(), hostVeth
	if err := addrplan.Reserve(r.hostKey, 0, "", cidrs); err != nil {
		return nil, err
	}
	undo.push(func() { addrplan.Release(r.hostKey, 0, cidrs) })
	hs, err := enter(host, r.hostKey)
	if err != nil {
		return nil, err
	}
	r.hs = hs
	undo.push(func() { hs.leaveNow(host) })
	if err := hs.tbl.Ensure(host); err != nil {
		return nil, fmt.Errorf("nftables table: %w", err)
	}
	hc, err := hs.tbl.Conn(host)
	if err != nil {
		return nil, err
	}
	defer hs.tbl.PutConn(hc)
	var nets addrplan.Networks
	for _, cidr := range cidrs {
		nets = append(nets, addrplan.Network{Prefix: cidr})
	}
	up, err := hs.view.Uplink(host, hc, nets.Need(uplink, false))
	if err != nil {
		return nil, err
	}
	if r.hostIdx, err = hc.LinkIndex(hostVeth); err != nil {
		return nil, fmt.Errorf("link %q: %w", hostVeth, err)
	}
	r.Uplink = up.Name
	if r.hostIdx == up.Index {
		return nil, fmt.Errorf("%w: link %s is the uplink itself", ErrInvalidConfig, hostVeth)
	}
	r.ent = nftset.Entries{Link: r.hostIdx, Uplink: up.Index, Prefixes: cidrs, Mark: entryMark(hostVeth)}
	var turnOn []byte // the families of the link whose forwarding AddRules turns on
	for _, fam := range r.ent.Families() {
		// Before Linux 6.17 IPv6 is forwarded by the global switch only,
		// which AddRules shares if it is on but never turns on itself.
		globalV6 := fam == unix.NFPROTO_IPV6 && !nl.HasForceForwarding(host)
		if globalV6 && !globalV6ForTests && !nl.ForwardsAll(host, unix.NFPROTO_IPV6) {
			return nil, fmt.Errorf("%w: this kernel forwards IPv6 only with the global net.ipv6.conf.all.forwarding "+
				"(per-interface force_forwarding is Linux 6.17 and later), which AddRules does not turn on: "+
				"turn it on yourself, or use Connect with Config.IPv6GlobalForwarding", ErrNoIPv6Forwarding)
		}
		r.ent.GlobalV6 = r.ent.GlobalV6 || globalV6
		wasOn := globalV6 // (the global switch forwards the link's IPv6)
		if !globalV6 {
			if wasOn, err = nl.LinkForwards(host, hc, r.hostIdx, fam); err != nil {
				return nil, fmt.Errorf("link %q: %w", hostVeth, err)
			}
		}
		if !wasOn {
			turnOn = append(turnOn, fam)
		}
	}
	if err := hs.shares.Add(context.Background(), host, hc, &hs.tbl, r.ent); err != nil {
		return nil, err
	}
	undo.push(func() { hs.shares.Remove(host, hc, &hs.tbl, r.ent) })
	// Forwarding last, once the rules are in place.
	if err := hook("rules forwarding"); err != nil {
		return nil, fmt.Errorf("forwarding: %w", err)
	}
	for _, fam := range turnOn {
		if err := nl.SetLinkForwarding(host, hc, r.hostIdx, fam, true); err != nil {
			return nil, fmt.Errorf("forwarding: %w", err)
		}
		undo.push(func() { nl.SetLinkForwarding(host, hc, r.hostIdx, fam, false) })
		r.linkFwdOff = append(r.linkFwdOff, fam)
	}
	hs.addLive(r.owned)
	return r, nil
}

// sysClose is Close on Linux.
func (r *Rules) sysClose() error {
	if r == nil {
		return fmt.Errorf("nat: close of a nil *Rules: %w", os.ErrInvalid)
	}
	if r.owned == nil {
		return fmt.Errorf("nat: close rules: not made by AddRules: %w", os.ErrInvalid)
	}
	return r.owned.close("nat: close rules "+r.owned.what(), false)
}
