package network

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nat/internal/addrplan"
	"github.com/nsnet/nsnet/nat/internal/bridgeset"
	"github.com/nsnet/nsnet/nat/internal/flows"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/nat/internal/table"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/veth"
	"golang.org/x/sys/unix"
)

// state is what a Network holds in the host, recorded at Create; close
// gives it all back. mu guards the members, the addresses and names
// taken, and closed; a member's own lock is taken after it, never before.
type state struct {
	host      *netns.Handle // our own handle to the host namespace
	hostKey   uint64
	bridgeIdx int
	bridgeMAC []byte
	pub       Network // what Create returned, for the members
	rules     *nat.Rules
	dns       *nameServer // nil: Config.NoDNS
	hc        *nl.Conn    // the host's rtnetlink socket (its own lock)
	hcMu      sync.Mutex

	mu      sync.Mutex
	members map[*member]bool
	used    map[netip.Addr]bool // addresses of members, and those being attached
	names   map[string]*member  // lower-cased names and aliases
	closed  bool
	err     error
}

// mark is the owner mark on what the network's parts are called name.
func mark(hostKey uint64, name string) string {
	m := owner.Self
	m.Host, m.Link = hostKey, name
	return m.String()
}

// randomMAC is a random locally administered unicast Ethernet address.
func randomMAC() []byte {
	b := make([]byte, 6)
	rand.Read(b)
	b[0] = b[0]&0xfe | 0x02
	return b
}

// undoStack runs its functions in reverse on failure.
type undoStack []func()

func (u *undoStack) push(f func()) { *u = append(*u, f) }
func (u undoStack) unwind() {
	for i := len(u) - 1; i >= 0; i-- {
		u[i]()
	}
}

func (c Config) validate() error {
	switch {
	case c.HostNS != nil && c.HostNS.Fd() < 0:
		return fmt.Errorf("host namespace: %w", netns.ErrClosed)
	case !c.Prefix.IsValid() && !c.Prefix6.IsValid():
		return invalid("no prefix: give Prefix, Prefix6 or both")
	case c.Prefix.IsValid() && (!c.Prefix.Addr().Is4() || c.Prefix.Bits() > 30):
		return invalid("Prefix %v: an IPv4 prefix of /30 or larger", c.Prefix)
	case c.Prefix6.IsValid() && (!c.Prefix6.Addr().Is6() || c.Prefix6.Addr().Is4In6() || c.Prefix6.Bits() < 64 || c.Prefix6.Bits() > 120):
		return invalid("Prefix6 %v: an IPv6 prefix of /64 to /120", c.Prefix6)
	case c.Prefix.IsValid() && c.Prefix.Masked() != c.Prefix || c.Prefix6.IsValid() && c.Prefix6.Masked() != c.Prefix6:
		return invalid("prefix %s has host bits set", describe(c.Prefix, c.Prefix6))
	}
	if c.Uplink != "" {
		if err := nl.CheckIfName(c.Uplink); err != nil {
			return fmt.Errorf("uplink: %w", err)
		}
	}
	if c.Bridge != "" {
		if err := nl.CheckIfName(c.Bridge); err != nil {
			return fmt.Errorf("bridge: %w", err)
		}
	}
	return nil
}

// hostHandle is our own handle to h (nil: the current namespace).
func hostHandle(h *netns.Handle) (*netns.Handle, error) {
	if h == nil {
		return netns.Current()
	}
	return nl.DupHandle(h)
}

// create is Create: the bridge (marked, down, no IPv6 link-local) with its
// gateway addresses, up; the nftables entries; the bridge table; the name
// server.
func (c Config) create() (_ *Network, err error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	host, err := hostHandle(c.HostNS)
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
	st := &state{host: host, hostKey: host.ID(), members: map[*member]bool{}, used: map[netip.Addr]bool{}, names: map[string]*member{}}
	if st.hc, err = nl.Dial(host); err != nil {
		return nil, err
	}
	undo.push(func() { st.hc.Close() })
	n := &Network{Bridge: c.Bridge, Prefix: c.Prefix, Prefix6: c.Prefix6, state: st}
	if n.Bridge == "" {
		n.Bridge = "nsb-" + owner.RandomString(11)
	}
	if c.Prefix.IsValid() {
		n.Gateway = c.Prefix.Addr().Next()
	}
	if c.Prefix6.IsValid() {
		n.Gateway6 = c.Prefix6.Addr().Next()
	}
	if err := st.makeBridge(n); err != nil {
		return nil, err
	}
	undo.push(func() {
		nl.DeleteLinks(host, st.hc, []int{st.bridgeIdx}, nil)
		// (The bridge's own traffic while it was up: its multicast
		// reports, say.)
		forget(host, []uint32{0}, func(a netip.Addr) bool { return c.Prefix.Contains(a) || c.Prefix6.Contains(a) })
	})
	var prefixes []netip.Prefix
	for _, p := range []netip.Prefix{c.Prefix, c.Prefix6} {
		if p.IsValid() {
			prefixes = append(prefixes, p)
		}
	}
	if err := checkTableRules(host); err != nil {
		return nil, err
	}
	if st.rules, err = nat.AddRules(host, n.Bridge, c.Uplink, prefixes...); err != nil {
		return nil, err
	}
	undo.push(func() { st.rules.Close() })
	n.Uplink = st.rules.Uplink
	if err := bridgeset.Ensure(host); err != nil {
		return nil, fmt.Errorf("bridge table: %w", err)
	}
	if !c.NoDNS {
		if st.dns, err = startNameServer(host, n, st.bridgeIdx, st.lookupMember); err != nil {
			return nil, fmt.Errorf("name server: %w", err)
		}
	}
	st.pub = *n
	st.pub.state = nil
	guardAdd(st)
	return n, nil
}

// withinNetwork is the comment of the rule that accepts a network's
// members' bridged traffic in nat's table (see nftset.AddSkeleton).
const withinNetwork = "nsnet: within the link's own network"

// checkTableRules checks that nat's table has the rule networks need: a
// table is made by the first process with a link on the host and used by
// all others until the last is gone, so one made by an older nsnet, still
// in use, would drop the members' traffic to each other where
// br_netfilter is loaded, silently.
func checkTableRules(host *netns.Handle) error {
	c, err := table.NFTConn(host)
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	rules, err := c.GetRules(nftset.Table, &nftables.Chain{Name: "from_link", Table: nftset.Table})
	if nftset.IsENOENT(err) || err == nil && len(rules) == 0 {
		return nil // no table yet: AddRules makes today's
	}
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	for _, r := range rules {
		if bytes.Contains(r.UserData, []byte(withinNetwork)) {
			return nil
		}
	}
	return fmt.Errorf("%w: close the links of the processes using it (nsnet ls), or run nsnet sweep once they have exited", ErrStaleTable)
}

// makeBridge creates the bridge with a fixed Ethernet address of its own
// (else it takes its ports' lowest, which changes as members come and go,
// and the members' neighbour caches go stale), its mark and no IPv6
// link-local address, then gives it the gateway addresses and brings it
// up.
func (st *state) makeBridge(n *Network) error {
	// The index is the library's choice, so that the mark goes to the
	// bridge by index once it exists: never by a name that may be the
	// caller's or someone else's link (Config.Bridge is refused if taken).
	var err error
	st.bridgeMAC = randomMAC()
	for attempt := 0; ; attempt++ {
		st.bridgeIdx = nl.RandomIndex()
		err = st.hc.Exec(nl.NewLink(&rtnetlink.LinkMessage{Index: uint32(st.bridgeIdx), Attributes: &rtnetlink.LinkAttributes{
			Name: n.Bridge, Address: st.bridgeMAC, Info: &rtnetlink.LinkInfo{Kind: "bridge"}}}))
		if attempt == 3 || !nl.IndexTaken(st.hc, err, n.Bridge) {
			break
		}
	}
	if err != nil {
		st.bridgeIdx = 0
		return fmt.Errorf("bridge %s: %w", n.Bridge, err)
	}
	if err := st.hc.Exec(nl.PrepareLink(st.bridgeIdx, nl.LinkConf{NoLinkLocal: true, Alias: mark(st.hostKey, n.Bridge)})); err != nil {
		nl.DeleteLinks(st.host, st.hc, []int{st.bridgeIdx}, nil)
		return fmt.Errorf("bridge %s: %w", n.Bridge, err)
	}
	var reqs []nl.Request
	if n.Gateway.IsValid() {
		reqs = append(reqs, nl.NewAddr(st.bridgeIdx, netip.PrefixFrom(n.Gateway, n.Prefix.Bits()), 0, false))
	}
	if n.Gateway6.IsValid() {
		// And a link-local address: the host solicits a neighbour from
		// one (see addrplan.HostLinkLocal), or it reaches no member that
		// has not spoken first (a published port's).
		reqs = append(reqs, nl.NewAddr(st.bridgeIdx, netip.PrefixFrom(n.Gateway6, n.Prefix6.Bits()), unix.IFA_F_NODAD, false),
			nl.NewAddr(st.bridgeIdx, addrplan.HostLinkLocal(st.bridgeIdx), unix.IFA_F_NODAD|unix.IFA_F_NOPREFIXROUTE, false))
	}
	reqs = append(reqs, nl.SetLinkUp(st.bridgeIdx, "", true))
	if err := st.hc.Exec(reqs...); err != nil {
		nl.DeleteLinks(st.host, st.hc, []int{st.bridgeIdx}, nil)
		return fmt.Errorf("bridge %s: %w", n.Bridge, err)
	}
	return nil
}

// close is Network.Close: the members first (their pairs with one
// request), then the name server, the entries (forwarding off first),
// the bridge, and the bridge table if it is empty.
func (st *state) close() error {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return st.err
	}
	st.closed = true
	var ms []*member
	for m := range st.members {
		ms = append(ms, m)
	}
	st.mu.Unlock()
	guardRemove(st)
	errs := []error{st.closeMembers(ms)}
	if st.dns != nil {
		st.dns.close()
	}
	errs = append(errs, st.rules.Close())
	st.hcMu.Lock()
	gone, err := nl.DeleteLinks(st.host, st.hc, []int{st.bridgeIdx}, nil)
	st.hcMu.Unlock()
	if err != nil {
		errs = append(errs, fmt.Errorf("bridge %s: %w", st.pub.Bridge, err))
	} else if gone[0] != nil {
		errs = append(errs, fmt.Errorf("bridge %s: %w", st.pub.Bridge, gone[0]))
	}
	// (The members' and the network's marked connections went with
	// closeMembers and the Rules' Close: the host's own are left.)
	errs = append(errs, forget(st.host, []uint32{0}, func(a netip.Addr) bool {
		return st.pub.Prefix.Contains(a) || st.pub.Prefix6.Contains(a)
	}))
	errs = append(errs, dropBridgeTable(st.host))
	st.hc.Close()
	st.host.Close()
	st.mu.Lock()
	st.err = errors.Join(errs...)
	if st.err != nil {
		st.err = fmt.Errorf("network: close %s: %w", st.pub.Bridge, st.err)
	}
	st.mu.Unlock()
	return st.err
}

// forget deletes the connection tracking entries marked with one of marks
// (0: the host's own, such as the name server's and the bridge's) that an
// address of match began or answered.
func forget(host *netns.Handle, marks []uint32, match func(netip.Addr) bool) error {
	c, err := flows.Dial(host)
	if err != nil {
		return err
	}
	defer c.Close()
	return flows.ForgetAddrs(c, marks, match)
}

// dropBridgeTable removes the bridge table if no entry is left in it (of
// any process).
func dropBridgeTable(host *netns.Handle) error {
	c, err := table.NFTConn(host)
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	raw, err := nftset.DialNFT(host)
	if err != nil {
		return err
	}
	defer raw.Close()
	if _, err := bridgeset.Drop(c, raw); err != nil && !nftset.IsENOENT(err) {
		return fmt.Errorf("bridge table: %w", err)
	}
	return nil
}

// commitBridge commits entries to the bridge table (exclusive adds, or
// removals that ignore entries gone). Create made the table; an add makes
// it again if it is missing (a flushed ruleset, another process's last
// Close between ours).
func commitBridge(host *netns.Handle, els []nftset.Elem, add, exclusive bool) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		b := bridgeset.Batch()
		if add {
			err = b.Add(els, exclusive)
		} else {
			err = b.Del(els, true)
		}
		if err != nil {
			return err
		}
		raw, derr := nftset.DialNFT(host)
		if derr != nil {
			return derr
		}
		err = b.Commit(raw)
		raw.Close()
		if !nftset.IsENOENT(err) {
			break
		}
		if !add {
			return nil // no table: nothing to remove
		}
		if err = bridgeset.Ensure(host); err != nil {
			return err
		}
	}
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("anti-spoofing entries: %w", os.ErrExist)
	}
	return err
}

func (st *state) list() []*Member {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []*Member
	for m := range st.members {
		out = append(out, m.pub)
	}
	slices.SortFunc(out, func(a, b *Member) int { return a.Addr.Compare(b.Addr) + 2*a.Addr6.Compare(b.Addr6) })
	return out
}

// lookupMember returns the member called name (lower case), if any.
func (st *state) lookupMember(name string) (*Member, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	m, ok := st.names[name]
	if !ok || m == nil { // (nil: reserved by an Attach not finished)
		return nil, false
	}
	return m.pub, true
}

func (st *state) lookup(name string) []netip.Addr {
	m, ok := st.lookupMember(strings.ToLower(name))
	if !ok {
		return nil
	}
	var out []netip.Addr
	for _, a := range []netip.Addr{m.Addr, m.Addr6} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// list is List: the bridges among nat.Links, their ports with an owner
// mark (its tag: the member's name), their addresses from the bridge
// table.
func list(hostNS *netns.Handle) ([]Info, error) {
	links, err := nat.Links(hostNS)
	if err != nil {
		return nil, err
	}
	all, err := veth.List(hostNS)
	if err != nil {
		return nil, err
	}
	kind := map[int]string{}
	for _, l := range all {
		kind[l.Index] = l.Kind
	}
	host, err := hostHandle(hostNS)
	if err != nil {
		return nil, err
	}
	defer host.Close()
	entries, err := readBridgeTable(host)
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, li := range links {
		if kind[li.Index] != "bridge" {
			continue
		}
		info := Info{LinkInfo: li}
		for _, l := range all {
			m, ok := owner.Parse(l.Alias)
			if l.MasterIndex != li.Index || !ok {
				continue
			}
			mi := MemberInfo{HostVeth: l.Name, Index: l.Index, Name: m.Tag, Namespace: l.PeerNetNSName}
			if mi.Namespace == "" && l.PeerNetNSID >= 0 {
				mi.Namespace = fmt.Sprintf("nsid %d", l.PeerNetNSID)
			}
			for _, e := range entries[l.Index] {
				switch e.Set {
				case bridgeset.SetAddrs, bridgeset.SetAddrs6:
					a, _ := netip.AddrFromSlice(e.Key[4:])
					if a.Is4() {
						mi.Addr = a
					} else {
						mi.Addr6 = a
					}
				case bridgeset.SetMACs:
					mi.MAC = net.HardwareAddr(e.Key[4:10])
				}
			}
			info.Members = append(info.Members, mi)
		}
		out = append(out, info)
	}
	return out, nil
}

// readBridgeTable reads the bridge table's entries by port (none if there
// is no table).
func readBridgeTable(host *netns.Handle) (map[int][]nftset.Elem, error) {
	c, err := table.NFTConn(host)
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	es, err := bridgeset.Read(c, func(string) (string, bool) { return "", false })
	if nftset.IsENOENT(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	byPort := map[int][]nftset.Elem{}
	for _, e := range es {
		if len(e.Elem.Key) >= 4 {
			p := int(binary.NativeEndian.Uint32(e.Elem.Key))
			byPort[p] = append(byPort[p], e.Elem)
		}
	}
	return byPort, nil
}
