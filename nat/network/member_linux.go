package network

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nat/internal/bridgeset"
	"github.com/nsnet/nsnet/nat/internal/dns"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// member is what a Member holds, recorded at Attach. mu guards closed and
// err (and serialises Publish, Unpublish and Close).
type member struct {
	st      *state
	pub     *Member
	nsRef   *netns.Handle // holds the namespace open
	hostIdx int
	ent     bridgeset.Member
	names   []string   // lower-cased
	resolv  *dns.Setup // the resolv.conf written (nil: none)
	addrs   []netip.Addr

	mu     sync.Mutex
	closed bool
	err    error
}

// take checks the member's names and addresses and reserves them (under
// st.mu), choosing free addresses where none is given.
func (st *state) take(mc MemberConfig) (names []string, a4, a6 netip.Addr, err error) {
	all := mc.Aliases
	if mc.Name != "" {
		all = append([]string{mc.Name}, all...)
	}
	for _, n := range all {
		if err := checkName(n); err != nil {
			return nil, a4, a6, err
		}
		names = append(names, strings.ToLower(n))
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return nil, a4, a6, fmt.Errorf("network %s: %w", st.pub.Bridge, os.ErrClosed)
	}
	for i, n := range names {
		if _, taken := st.names[n]; taken || slices.Index(names, n) != i {
			return nil, a4, a6, fmt.Errorf("name %q is taken on the network: %w", n, os.ErrExist)
		}
	}
	if a4, err = st.pick(mc.Addr, st.pub.Prefix, st.pub.Gateway, "Addr"); err != nil {
		return nil, a4, a6, err
	}
	if a6, err = st.pick(mc.Addr6, st.pub.Prefix6, st.pub.Gateway6, "Addr6"); err != nil {
		return nil, a4, a6, err
	}
	for _, a := range []netip.Addr{a4, a6} {
		if a.IsValid() {
			st.used[a] = true
		}
	}
	for _, n := range names {
		st.names[n] = nil // reserved; the member is set once attached
	}
	return names, a4, a6, nil
}

// pick checks a given address, or picks the next free one of p.
func (st *state) pick(want netip.Addr, p netip.Prefix, gw netip.Addr, field string) (netip.Addr, error) {
	if !p.IsValid() {
		if want.IsValid() {
			return want, invalid("%s %v: the network has no prefix of its family", field, want)
		}
		return netip.Addr{}, nil
	}
	last := lastAddr(p)
	if want.IsValid() {
		switch {
		case !p.Contains(want) || want == p.Addr() || want == gw || want.Is4() && want == last:
			return want, invalid("%s %v: not a member's address of %v (the gateway is %v)", field, want, p, gw)
		case st.used[want]:
			return want, fmt.Errorf("address %v is taken on the network: %w", want, os.ErrExist)
		}
		return want, nil
	}
	for a := gw.Next(); p.Contains(a) && !(a.Is4() && a == last); a = a.Next() {
		if !st.used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free address left in %v", p)
}

// lastAddr is p's last address (IPv4's broadcast).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// release gives back what take reserved.
func (st *state) release(names []string, addrs []netip.Addr) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, a := range addrs {
		delete(st.used, a)
	}
	for _, n := range names {
		delete(st.names, n)
	}
}

func (m MemberConfig) validate(st *state, ns *netns.Handle) error {
	switch {
	case ns == nil:
		return invalid("namespace is nil (the host's own); give the namespace to attach")
	case ns.Fd() < 0:
		return fmt.Errorf("namespace: %w", netns.ErrClosed)
	case ns.Equal(st.host):
		return invalid("namespace %v is the host namespace itself", ns)
	case m.MAC != nil && (len(m.MAC) != 6 || m.MAC[0]&1 != 0 || bytes.Equal(m.MAC, make([]byte, 6))):
		return invalid("MAC %v: not a unicast Ethernet address", m.MAC)
	}
	for _, p := range m.Ports {
		if err := p.Validate(); err != nil {
			return err
		}
	}
	if m.Interface != "" {
		return nl.CheckIfName(m.Interface)
	}
	return nil
}

// attach is Attach: see the steps below, each undone on a later failure.
func (n *Network) attach(ns *netns.Handle, mc MemberConfig) (_ *Member, err error) {
	st := n.state
	if err := mc.validate(st, ns); err != nil {
		return nil, err
	}
	names, a4, a6, err := st.take(mc)
	if err != nil {
		return nil, err
	}
	var undo undoStack
	defer func() {
		if err != nil {
			undo.unwind()
		}
	}()
	m := &member{st: st, names: names}
	for _, a := range []netip.Addr{a4, a6} {
		if a.IsValid() {
			m.addrs = append(m.addrs, a)
		}
	}
	undo.push(func() { st.release(names, m.addrs) })
	if m.nsRef, err = nl.DupHandle(ns); err != nil {
		return nil, err
	}
	undo.push(func() { m.nsRef.Close() })
	pub, hostMark := m.describe(mc, a4, a6)

	// 1. The pair, the host end on the bridge (down), the other in ns.
	if err := m.makePair(hostMark); err != nil {
		return nil, fmt.Errorf("veth: %w", err)
	}
	undo.push(func() {
		m.deletePair()
		forget(st.host, []uint32{0, uint32(st.bridgeIdx)}, func(a netip.Addr) bool { return slices.Contains(m.addrs, a) })
	})
	// 2. Its anti-spoofing entries, before its port comes up: the member
	// sends nothing unchecked.
	m.ent.Port = m.hostIdx
	if err := commitBridge(st.host, m.ent.Elems(), true, true); err != nil {
		return nil, err
	}
	undo.push(func() { commitBridge(st.host, m.ent.Elems(), false, false) })
	// 3. The port up; the namespace's end with its addresses and routes.
	st.hcMu.Lock()
	// (Hairpin mode: a member's connection to a published port of its
	// own comes back out of its port where br_netfilter bridges it.)
	err = st.hc.Exec(nl.SetHairpin(m.hostIdx), nl.SetLinkUp(m.hostIdx, "", true))
	st.hcMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("bridge port: %w", err)
	}
	if err := m.configureNS(); err != nil {
		return nil, fmt.Errorf("namespace: %w", err)
	}
	// 4. Its resolv.conf.
	if st.dns != nil {
		if err := m.writeResolvConf(ns, hostMark); err != nil {
			return nil, err
		}
		undo.push(func() { m.resolv.Stop() })
	}
	// 5. Its ports.
	if len(mc.Ports) > 0 {
		if err := m.publish(mc.Ports); err != nil {
			return nil, err
		}
		undo.push(func() {
			for _, a := range m.addrs {
				if ps := st.rules.Ports(a); len(ps) > 0 {
					st.rules.Unpublish(a, ps...)
				}
			}
		})
	}
	// 6. On the network, under its names.
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil, fmt.Errorf("network %s: closed meanwhile: %w", st.pub.Bridge, os.ErrClosed)
	}
	st.members[m] = true
	for _, nm := range names {
		st.names[nm] = m
	}
	st.mu.Unlock()
	return pub, nil
}

// describe fills in the Member that Attach returns and m's entries, with
// the defaults for what mc leaves out, and returns them with the mark of
// the member's port (its name as the tag: "nsnet ls" shows it).
func (m *member) describe(mc MemberConfig, a4, a6 netip.Addr) (*Member, string) {
	pub := &Member{Name: mc.Name, Aliases: append([]string(nil), mc.Aliases...), Addr: a4, Addr6: a6, Interface: mc.Interface,
		MAC: mc.MAC, HostVeth: "nsm-" + owner.RandomString(11), member: m}
	if pub.Interface == "" {
		pub.Interface = "eth0"
	}
	if pub.MAC == nil {
		pub.MAC = randomMAC()
	}
	m.pub = pub
	hostMark := mark(m.st.hostKey, pub.HostVeth)
	if pub.Name != "" {
		hostMark += " tag=" + strings.ToLower(pub.Name)
	}
	m.ent = bridgeset.Member{MAC: pub.MAC, Bridge: m.st.bridgeMAC, Addr: a4, Addr6: a6, Mark: hostMark}
	return pub, hostMark
}

// makePair creates the veth pair: the host end enslaved to the bridge,
// marked and without IPv6 link-local address, in the same batch; the
// namespace's end made directly in ns with the member's MAC. Interface
// indexes are the library's choice, so that no lookup is needed.
func (m *member) makePair(hostMark string) error {
	st, pub := m.st, m.pub
	st.hcMu.Lock()
	defer st.hcMu.Unlock()
	var err error
	for attempt := 0; ; attempt++ {
		m.hostIdx = nl.RandomIndex()
		nsIdx := nl.RandomIndex()
		var errs []error
		_, errs, err = st.hc.Do(
			nl.NewVeth(nl.Veth{Name: pub.HostVeth, PeerName: pub.Interface, PeerNSFd: m.nsRef.Fd(), Index: m.hostIdx, PeerIndex: nsIdx,
				PeerHardwareAddr: pub.MAC, Master: st.bridgeIdx}),
			// (By name: one of the library's, which no one else has.)
			nl.PrepareLinkByName(pub.HostVeth, nl.LinkConf{NoLinkLocal: true, Alias: hostMark}))
		if err == nil {
			err = errs[0]
			if err == nil {
				if err = errs[1]; err != nil {
					nl.DeleteLinks(st.host, st.hc, []int{m.hostIdx}, nil)
				}
			}
		}
		if attempt == 3 || !nl.IndexTaken(st.hc, err, pub.HostVeth) {
			break
		}
	}
	return err
}

// configureNS sets up the namespace's end: no IPv6 link-local address or
// duplicate address detection (the member's addresses are the network's
// to give, and the anti-spoofing filter allows only them), its addresses,
// up, default routes through the gateway, and lo up.
func (m *member) configureNS() error {
	nc, err := nl.Dial(m.nsRef)
	if err != nil {
		return err
	}
	defer nc.Close()
	st, pub := m.st, m.pub
	idx, err := nc.LinkIndex(pub.Interface)
	if err != nil {
		return err
	}
	// No link-local address, with or without IPv6: a link-local address
	// means duplicate address detection, router solicitations and
	// multicast listener reports, which the bridge floods to every member
	// (each attach would cost the others work, more the more there are).
	reqs := []nl.Request{nl.NoLinkLocal(idx)}
	if pub.Addr.IsValid() {
		reqs = append(reqs, nl.NewAddr(idx, netip.PrefixFrom(pub.Addr, st.pub.Prefix.Bits()), 0, false))
	}
	if pub.Addr6.IsValid() {
		reqs = append(reqs, nl.NewAddr(idx, netip.PrefixFrom(pub.Addr6, st.pub.Prefix6.Bits()), unix.IFA_F_NODAD, false))
	}
	reqs = append(reqs, nl.SetLinkUp(idx, "", true))
	lo, err := nc.LinkIndex("lo")
	if err != nil {
		return err
	}
	reqs = append(reqs, nl.SetLinkUp(lo, "", true))
	// Default routes last: a namespace on a second network keeps the
	// first one's (EEXIST), and reaches the second's subnet directly.
	routes := len(reqs)
	for _, gw := range []netip.Addr{st.pub.Gateway, st.pub.Gateway6} {
		if gw.IsValid() {
			reqs = append(reqs, nl.NewRoute(nl.RouteSpec{Dst: netip.PrefixFrom(unspecified(gw), 0), Gateway: gw,
				Protocol: unix.RTPROT_BOOT, Type: unix.RTN_UNICAST}, false))
		}
	}
	_, errs, err := nc.Do(reqs...)
	for i, e := range errs {
		if i >= routes && errors.Is(e, unix.EEXIST) {
			continue
		}
		err = errors.Join(err, e)
	}
	return err
}

func unspecified(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// writeResolvConf writes ns's resolv.conf naming the network's name server
// (the gateway), with the host's search domains and options.
func (m *member) writeResolvConf(ns *netns.Handle, hostMark string) error {
	st := m.st
	gw, p := st.pub.Gateway, st.pub.Prefix
	if !gw.IsValid() {
		gw, p = st.pub.Gateway6, st.pub.Prefix6
	}
	plan, err := dns.Decide(dns.Servers, []netip.Addr{gw}, gw.Is4())
	if err != nil {
		return err
	}
	if m.resolv, err = dns.Start(plan, st.host, netns.EtcDir(ns), gw, p, hostMark, nil); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	return nil
}

// deletePair deletes the pair and waits until it is unlisted.
func (m *member) deletePair() error {
	st := m.st
	st.hcMu.Lock()
	defer st.hcMu.Unlock()
	gone, err := nl.DeleteLinks(st.host, st.hc, []int{m.hostIdx}, nil)
	if err == nil {
		err = gone[0]
	}
	return err
}

// publish publishes ports to the member's address of each family a port
// is for (see Member.Publish), all or none.
func (m *member) publish(ports []nat.Port) error {
	var done []netip.Addr
	for _, a := range m.addrs {
		var mine []nat.Port
		for _, p := range ports {
			if !p.HostAddr.IsValid() || p.HostAddr.Is4() == a.Is4() {
				mine = append(mine, p)
			}
		}
		if len(mine) == 0 {
			continue
		}
		if err := m.st.rules.Publish(a, mine...); err != nil {
			for _, d := range done {
				m.st.rules.Unpublish(d, m.st.rules.Ports(d)...)
			}
			return err
		}
		done = append(done, a)
	}
	if len(done) == 0 {
		return invalid("ports %v: the member has no address of their family", ports)
	}
	return nil
}

func (m *Member) publish(ports []nat.Port) error {
	mb := m.member
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if mb.closed {
		return fmt.Errorf("network: publish on %s: %w", m, os.ErrClosed)
	}
	return mb.publish(ports)
}

func (m *Member) unpublish(ports []nat.Port) error {
	mb := m.member
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if mb.closed {
		return fmt.Errorf("network: unpublish on %s: %w", m, os.ErrClosed)
	}
	var errs []error
	found := false
	for _, a := range mb.addrs {
		err := mb.st.rules.Unpublish(a, ports...)
		if err == nil {
			found = true
		} else if !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if !found && len(errs) == 0 {
		return fmt.Errorf("network: unpublish %v: %w", ports, os.ErrNotExist)
	}
	return errors.Join(errs...)
}

func (m *Member) ports() []nat.Port {
	var out []nat.Port
	for _, a := range m.member.addrs {
		out = append(out, m.member.st.rules.Ports(a)...)
	}
	return out
}

// close is Member.Close.
func (m *Member) close() error {
	mb := m.member
	err := mb.st.closeMembers([]*member{mb})
	if err != nil {
		return fmt.Errorf("network: close %s: %w", m, err)
	}
	return nil
}

// closeMembers closes members of st, in the order that keeps every
// guarantee: off the network (names), their ports unpublished (and those
// connections forgotten), their pairs deleted with one request and
// unlisted (nothing of theirs passes from then on), their connections
// forgotten, their anti-spoofing entries removed (the ports are gone, so
// no frame goes unchecked), their resolv.conf files removed, their
// addresses freed.
func (st *state) closeMembers(ms []*member) error {
	var live []*member
	for _, m := range ms {
		m.mu.Lock()
		if !m.closed {
			m.closed = true
			live = append(live, m)
		} else {
			m.mu.Unlock()
		}
	}
	if len(live) == 0 {
		if len(ms) == 1 {
			return ms[0].err
		}
		return nil
	}
	defer func() {
		for _, m := range live {
			m.mu.Unlock()
		}
	}()
	st.mu.Lock()
	for _, m := range live {
		delete(st.members, m)
		for _, n := range m.names {
			delete(st.names, n)
		}
	}
	st.mu.Unlock()
	var errs []error
	var idx []int
	var addrs []netip.Addr
	var els = []bridgeset.Member{}
	for _, m := range live {
		for _, a := range m.addrs {
			if ps := st.rules.Ports(a); len(ps) > 0 {
				if err := st.rules.Unpublish(a, ps...); err != nil && !errors.Is(err, os.ErrClosed) {
					errs = append(errs, err)
				}
			}
		}
		idx = append(idx, m.hostIdx)
		addrs = append(addrs, m.addrs...)
		els = append(els, m.ent)
	}
	st.hcMu.Lock()
	gone, err := nl.DeleteLinks(st.host, st.hc, idx, nil)
	st.hcMu.Unlock()
	if err != nil {
		errs = append(errs, fmt.Errorf("veth: %w", err))
	}
	for i, g := range gone {
		if g != nil {
			errs = append(errs, fmt.Errorf("veth %s: %w", live[i].pub.HostVeth, g))
		}
	}
	if err := forget(st.host, []uint32{0, uint32(st.bridgeIdx)}, func(a netip.Addr) bool { return slices.Contains(addrs, a) }); err != nil {
		errs = append(errs, err)
	}
	var all []nftset.Elem
	for _, e := range els {
		all = append(all, e.Elems()...)
	}
	if err := commitBridge(st.host, all, false, false); err != nil {
		errs = append(errs, fmt.Errorf("anti-spoofing entries: %w", err))
	}
	for _, m := range live {
		if err := m.resolv.Stop(); err != nil {
			errs = append(errs, err)
		}
		m.nsRef.Close()
	}
	st.release(nil, addrs)
	err = errors.Join(errs...)
	for _, m := range live {
		m.err = err
	}
	return err
}
