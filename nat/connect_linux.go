package nat

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/addrplan"
	"github.com/nsnet/nsnet/nat/internal/dns"
	"github.com/nsnet/nsnet/nat/internal/firewall"
	"github.com/nsnet/nsnet/nat/internal/flows"
	"github.com/nsnet/nsnet/nat/internal/hostview"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/nat/internal/sweep"
	"github.com/nsnet/nsnet/netns"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// connecting is one Connect in progress: what it was asked, what its
// steps found and made, and the undo of each step done so far.
type connecting struct {
	ctx    context.Context
	cfg    Config
	l      *Link
	uplink string
	host   *netns.Handle
	hs     *hostState
	hc     *nl.Conn // a socket of the host, back to the pool at the end
	nc     *nl.Conn // a socket of the namespace, closed at the end
	undo   undoStack

	v4, v6            bool     // the link's families
	globalV6          bool     // IPv6 forwarded by the global switch (a kernel before 6.17)
	plan              dns.Plan // decided before anything is made
	hostMark, entMark string   // the host end's mark, every entry's
	fw                firewall.View
	up                hostview.Uplink
	ports             []nftset.PortMap // Config.Ports, resolved
	markedNow         bool             // the pair is marked as it is made
	localnet          bool             // a port on 127.0.0.1: route_localnet
	loIndex           int              // the namespace's lo, if it is down
}

// connectStep is one step of Connect: name is its name in errors and for
// the fail hook ("" for a step that names its own errors and has no
// hook); when, if set, says whether the step applies.
type connectStep struct {
	name string
	do   func() error
	when func() bool
}

// steps makes the link, one step after another, each pushing its undo; a
// failing step unwinds the ones before it.
func (c Config) steps(ctx context.Context, l *Link, uplink string) (err error) {
	k := &connecting{ctx: ctx, cfg: c, l: l, uplink: uplink, host: l.host}
	defer k.finish(&err)
	if err := k.decide(); err != nil {
		return err
	}
	for _, s := range []connectStep{
		{"", k.reserve, nil}, // this process's own overlaps: a clear error
		{"", k.enter, nil},   // the host state (owner socket, guard)
		{"nftables table", k.table, nil},
		{"", k.checkFirewalls, nil},
		{"inspect host", k.inspect, nil}, // the uplink, overlaps, the ports
		{"veth", k.veth, nil},
		{"nftables", k.entries, nil},
		{"docker-user", k.dockerUser, k.wantsDockerUser},
		// The namespace's end comes up first, so that the host end is
		// ready (has a carrier) as it comes up; with IPv6 the other way
		// round: a host end that comes up without a carrier waits for the
		// peer before IPv6 configures it, once, where coming up ready and
		// then seeing the carrier change makes the kernel walk every IPv6
		// route of the host twice (see nl.PrepareLink).
		{"namespace", k.namespace, func() bool { return !k.v6 }},
		{"host link", k.hostLink, nil},
		{"namespace", k.namespace, func() bool { return k.v6 }},
		{"dns", k.dns, k.plan.Writes},
		{"namespace lo", k.lo, func() bool { return k.loIndex != 0 }},
	} {
		if err := k.run(s); err != nil {
			return err
		}
	}
	return nil
}

// run runs one step: the context and the fail hook first, for a named
// one, whose errors then carry its name.
func (k *connecting) run(s connectStep) error {
	if s.when != nil && !s.when() {
		return nil
	}
	if s.name == "" {
		return s.do()
	}
	err := k.ctx.Err()
	if err == nil {
		err = hook(s.name)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	if err := s.do(); err != nil {
		if s.name == "inspect host" {
			return err // its errors say what was wrong with the host
		}
		return fmt.Errorf("%s: %w", s.name, err)
	}
	return nil
}

// finish undoes what was made if Connect failed, and gives the sockets
// back (after the undo, which uses them).
func (k *connecting) finish(err *error) {
	if *err != nil {
		k.undo.unwind()
	}
	if k.hc != nil {
		k.hs.tbl.PutConn(k.hc)
	}
	if k.nc != nil {
		k.nc.Close()
	}
}

// decide settles, before anything is made, the link's families, its DNS
// (from the host's files) and its marks.
func (k *connecting) decide() error {
	c, l := k.cfg, k.l
	_, k.v6 = l.nets.Of(unix.NFPROTO_IPV6)
	_, k.v4 = l.nets.Of(unix.NFPROTO_IPV4)
	plan, err := dns.Decide(c.DNS.mode(), c.DNSServers, k.v4)
	if err != nil {
		return err
	}
	if c.Persistent {
		plan = dns.Plan{} // nothing in this process outlives it
	}
	k.plan = plan
	k.hostMark, k.entMark = owner.Self.String(), entryMark(l.HostVeth)
	if c.Persistent {
		k.hostMark = persistentEntryMark(l.HostVeth, c.Tag)
		k.entMark = k.hostMark
	}
	k.markedNow = c.HostVeth == ""
	if k.v6 && !nl.HasForceForwarding(k.host) {
		// Before Linux 6.17: IPv6 is forwarded by the global switch (see
		// uplinks.GlobalV6), which only a Config that allows it turns on.
		if !c.IPv6GlobalForwarding && !globalV6ForTests && !nl.ForwardsAll(k.host, unix.NFPROTO_IPV6) {
			return fmt.Errorf("%w: this kernel forwards IPv6 only with the global net.ipv6.conf.all.forwarding "+
				"(per-interface force_forwarding is Linux 6.17 and later): set Config.IPv6GlobalForwarding to let nsnet turn it on "+
				"while IPv6 links need it", ErrNoIPv6Forwarding)
		}
		k.globalV6 = true
	}
	return nil
}

func (k *connecting) reserve() error {
	l := k.l
	if err := addrplan.Reserve(l.hostKey, l.nsKey, l.nsName, l.nets.Prefixes()); err != nil {
		return err
	}
	k.undo.push(func() { addrplan.Release(l.hostKey, l.nsKey, l.nets.Prefixes()) })
	return nil
}

func (k *connecting) enter() error {
	hs, err := enter(k.host, k.l.hostKey)
	if err != nil {
		return err
	}
	k.hs, k.l.hs = hs, hs
	k.undo.push(func() { hs.leaveNow(k.host) })
	return nil
}

func (k *connecting) table() error { return k.hs.tbl.Ensure(k.host) }

// checkFirewalls refuses a host whose other firewalls would drop the
// link's packets (unless AllowForeignDrop), and learns where Docker's
// DOCKER-USER chains are (for DockerUser).
func (k *connecting) checkFirewalls() error {
	c := k.cfg
	if c.AllowForeignDrop && !c.DockerUser {
		return nil
	}
	var err error
	if k.fw, err = k.hs.firewall(k.host); err != nil {
		return err
	}
	if !c.AllowForeignDrop {
		if p := k.fw.Problem(c.DockerUser, k.l.nets.Families()); p != "" {
			return fmt.Errorf("%w: %s", ErrForeignDrop, p)
		}
	}
	return nil
}

// globalV6ForTests takes every Config as setting IPv6GlobalForwarding (see
// SetIPv6GlobalMode in the tests).
var globalV6ForTests bool

// inspect finds the uplink and checks the host (see hostview.View.Uplink),
// and resolves the published ports, which go into the same transaction as
// the link's other entries: one taken fails it all, before anything is added.
func (k *connecting) inspect() (err error) {
	if k.hc, err = k.hs.tbl.Conn(k.host); err != nil {
		return err
	}
	if k.up, err = k.hs.view.Uplink(k.host, k.hc, k.l.nets.Need(k.uplink, true)); err != nil {
		return err
	}
	k.l.Uplink = k.up.Name
	if len(k.cfg.Ports) > 0 {
		if k.ports, err = expandPorts(k.host, k.hc, k.up.Index, k.l.nets.Families(), nil, k.cfg.Ports, !k.cfg.PortsReserved); err != nil {
			return err
		}
	}
	k.localnet = slices.ContainsFunc(k.ports, nftset.PortMap.Loopback)
	return nil
}

// veth makes the pair, its ends numbered by the library (see
// nl.RandomIndex), so that every later step names them by index. The owner
// mark (ifalias, which the kernel ignores on creation) goes in the same
// batch when the name is the library's own random one, so not even a
// crash right after leaves an unmarked pair; a name the caller chose may
// be a link of theirs if the create fails, so its mark comes with the
// host link step, by index.
func (k *connecting) veth() error {
	l, c := k.l, k.cfg
	var err error
	for attempt := 0; ; attempt++ {
		l.hostIdx, l.nsIdx = nl.RandomIndex(), nl.RandomIndex()
		reqs := []nl.Request{nl.NewVeth(nl.Veth{Name: l.HostVeth, PeerName: l.NSVeth, PeerNSFd: l.nsRef.Fd(),
			MTU: c.MTU, Index: l.hostIdx, PeerIndex: l.nsIdx, PeerHardwareAddr: c.NSMAC})}
		if k.markedNow {
			reqs = append(reqs, nl.SetAliasByName(l.HostVeth, k.hostMark))
			if k.v6 {
				// The mark with the IPv6 host end's other settings: one
				// request (see nl.PrepareLink).
				reqs[1] = nl.PrepareLinkByName(l.HostVeth, hostEndConf(k.v4, k.localnet, k.hostMark))
			}
		}
		var errs []error
		_, errs, err = k.hc.Do(reqs...)
		if err == nil {
			err = errs[0]
		}
		if attempt == 3 || !nl.IndexTaken(k.hc, err, l.HostVeth) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%s peer %s: %w", l.HostVeth, l.NSVeth, err)
	}
	// Deleting the host end takes the peer, both addresses and the
	// namespace's route with it.
	k.undo.push(k.unlink)
	return nil
}

// unlink deletes the pair (see quiesce).
func (k *connecting) unlink() { quiesce(k.host, k.hc, []int{k.l.hostIdx}, nil) }

// entries adds the link's entries to the sets (and its share of the
// uplink's forwarding), then forgets the connections made to its ports
// before they were published (see flows.ForgetUntranslated).
func (k *connecting) entries() error {
	l, c, hs, host, hc := k.l, k.cfg, k.hs, k.host, k.hc
	l.ent = nftset.Entries{Link: l.hostIdx, Uplink: k.up.Index, Prefixes: l.nets.Prefixes(), Routed: l.nets.RoutedFams(),
		NSAddr: l.NSAddr.Addr(), NSAddr6: l.NSAddr6.Addr(), AllowSiblings: c.AllowSiblings, Ports: k.ports,
		Mark: k.entMark, GlobalV6: k.globalV6}
	if c.Persistent {
		if err := hs.addPersistent(k.ctx, host, hc, l.ent); err != nil {
			return err
		}
		k.undo.push(func() {
			owner.WithHostLock(context.Background(), host, func() error {
				_, err := sweep.Persistent(host, hc, l.HostVeth)
				return err
			})
		})
	} else {
		if err := hs.shares.Add(k.ctx, host, hc, &hs.tbl, l.ent); err != nil {
			return err
		}
		k.undo.push(func() { hs.shares.Remove(host, hc, &hs.tbl, l.ent) })
	}
	if len(k.ports) > 0 {
		hs.tbl.WithConntrack(host, func(c *conntrack.Conn) error { flows.ForgetUntranslated(c, k.ports); return nil })
	}
	return nil
}

// dockerFams are the link's families whose Docker table has DOCKER-USER,
// with Config.DockerUser.
func (k *connecting) dockerFams() []byte {
	var fams []byte
	for _, fam := range k.l.nets.Families() {
		if k.cfg.DockerUser && k.fw.DockerUser[fam] {
			fams = append(fams, fam)
		}
	}
	return fams
}

func (k *connecting) wantsDockerUser() bool { return k.cfg.DockerUser }

// dockerUser inserts the link's rules where Docker's chain is; where it is
// not yet (Docker starts later), the guard inserts them when it appears.
func (k *connecting) dockerUser() error {
	l, fams := k.l, k.dockerFams()
	comment := firewall.DockerUserComment(l.HostVeth, l.hostIdx)
	if len(fams) > 0 {
		if err := k.hs.acceptInDockerUser(k.host, fams, l.HostVeth, comment); err != nil {
			return err
		}
		k.undo.push(func() { k.hs.dropDockerUser(k.host, map[string]int{comment: 2 * len(fams)}) })
	}
	l.dockerUser, l.dockerFams = comment, fams
	return nil
}

// namespace brings the peer up with its addresses and default routes
// (IPv6's without duplicate address detection: usable at once), and looks
// lo up (it comes up last: see lo).
func (k *connecting) namespace() error {
	l := k.l
	var err error
	if k.nc, err = nl.Dial(l.nsRef); err != nil {
		return err
	}
	reqs := []nl.Request{nl.GetLinkByName("lo"), nl.SetLinkUp(l.nsIdx, "", true)}
	for _, n := range l.nets {
		reqs = append(reqs, n.AddNS(l.nsIdx)...)
	}
	for _, n := range l.nets {
		reqs = append(reqs, nl.NewRoute(nl.RouteSpec{Dst: netip.PrefixFrom(addrplan.Unspecified(n.Fam()), 0), Gateway: n.Host,
			Protocol: unix.RTPROT_BOOT, Type: unix.RTN_UNICAST}, false))
	}
	replies, errs, err := k.nc.Do(reqs...)
	if err == nil {
		err = errors.Join(errs...)
	}
	if err != nil {
		return err
	}
	lo, err := nl.DecodeLink(replies[0][0].Data)
	if err != nil {
		return err
	}
	if lo.Flags&unix.IFF_UP == 0 {
		k.loIndex = int(lo.Index)
	}
	return nil
}

// hostLink brings the host end up with its addresses and, last, its
// forwarding: the link's packets are forwarded only once everything that
// filters and masquerades them is in place (IPv6's while the link is
// still down: nothing passes before it is up). From then on the link
// forwards, so a later failure deletes the pair before its entries go
// (see quiesce).
func (k *connecting) hostLink() error {
	l, host := k.l, k.host
	if !k.v6 {
		nl.DisableIPv6(host, l.HostVeth)
	} else if !k.globalV6 && !nl.ForwardsAll(host, unix.NFPROTO_IPV6) {
		if err := nl.SetForceForwarding(host, l.HostVeth, true); err != nil {
			return err
		}
	}
	var reqs []nl.Request
	if k.v6 {
		// IPv6 on: the settings in one request while the link is down
		// (see nl.PrepareLink), made with the pair for a name of the
		// library's.
		if !k.markedNow {
			reqs = append(reqs, nl.PrepareLink(l.hostIdx, hostEndConf(k.v4, k.localnet, k.hostMark)))
		}
		reqs = append(reqs, nl.SetLinkUp(l.hostIdx, "", true))
		for _, n := range l.nets {
			reqs = append(reqs, n.AddHost(l.hostIdx)...)
		}
		reqs = append(reqs, nl.NewAddr(l.hostIdx, addrplan.HostLinkLocal(l.hostIdx), unix.IFA_F_NODAD|unix.IFA_F_NOPREFIXROUTE, false))
	} else {
		reqs = append(append(reqs, nl.NoLinkLocal(l.hostIdx), nl.SetLinkUp(l.hostIdx, "", true)), l.nets[0].AddHost(l.hostIdx)...)
		if !k.markedNow {
			reqs = append(reqs, nl.SetAlias(l.hostIdx, k.hostMark))
		}
		if k.localnet {
			reqs = append(reqs, nl.SetRouteLocalnet(l.hostIdx, true))
		}
		reqs = append(reqs, nl.SetForwarding(l.hostIdx, true))
	}
	k.undo.push(k.unlink)
	_, errs, err := k.hc.Do(reqs...)
	if err == nil {
		if !k.v6 && errors.Is(errs[0], unix.EAFNOSUPPORT) {
			errs[0] = nil // no IPv6 on the link: nothing to turn off
		}
		err = errors.Join(errs...)
	}
	return err
}

// dns starts the link's DNS (see the dns package): the relay listens on
// the link's IPv4 host address, or IPv6's for an IPv6-only link.
func (k *connecting) dns() error {
	l := k.l
	m := owner.Self
	m.Host, m.Link = l.hostKey, l.HostVeth
	n := l.nets[0]
	s, err := dns.Start(k.plan, k.host, l.etcDir, n.Host, n.Prefix, m.String(), k.hs.tbl.FlowOwner(l.hostIdx))
	if err != nil {
		return err
	}
	l.dns = s
	k.undo.push(func() { s.Stop() })
	return nil
}

// lo comes up only once everything else worked: bringing a link up cannot
// be undone exactly (the kernel attaches a qdisc that stays after it goes
// down again).
func (k *connecting) lo() error { return k.nc.Exec(nl.SetLinkUp(k.loIndex, "", true)) }
