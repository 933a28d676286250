package nat

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// hostState is what this process knows of one host namespace: whether the
// table is in place, the uplinks whose forwarding it turned on, and the
// prefixes and namespaces of its live links.
type hostState struct {
	mu         sync.Mutex // guards the fields below
	fwdMu      sync.Mutex // serialises uplink forwarding decisions with their changes
	tableReady bool
	// tableMaking is the attempt at making the table under way, if any.
	tableMaking *tableAttempt
	uplinks     map[int]*uplinkRef
	links       int
	routes      routeCache
	conns       []*nl.Conn       // idle rtnetlink sockets in the host namespace
	nfts        []*nftables.Conn // idle lasting nftables connections there (see nftSockets)
	// dropChecked and dropChain remember checkForeignDrop's finding.
	dropChecked bool
	dropChain   string
}

// enter counts a Link being made or alive; the caches and the table stay
// while there is one.
func (hs *hostState) enter() {
	hs.mu.Lock()
	hs.links++
	hs.mu.Unlock()
}

// lastLink reports whether only one link (or one being made) is counted.
func (hs *hostState) lastLink() bool {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.links <= 1
}

// leave uncounts one; after the last, it forgets the host state (closing
// the cached rtnetlink sockets: no fd outlives the last link) and removes
// the table if no process uses it. The nftables sockets are not closed
// here but handed back, for the caller to close after its last kernel step
// (see nftSockets).
func (hs *hostState) leave(host *netns.Handle) (nftSockets, error) {
	hs.mu.Lock()
	hs.links--
	last := hs.links == 0
	var socks nftSockets
	if last {
		hs.routes.close()
		for _, c := range hs.conns {
			c.Close()
		}
		socks.conns, hs.conns, hs.nfts = hs.nfts, nil, nil
		// Forget the rest too: with no link left, nothing holds the host
		// namespace open, and a new namespace may get its inode (the key).
		// Uplink counts can only be left over here if a Close step failed.
		clear(hs.uplinks)
		hs.dropChecked, hs.dropChain = false, ""
	}
	hs.mu.Unlock()
	if last {
		_, err := hs.dropTableIfUnused(host, &socks)
		return socks, err
	}
	return socks, nil
}

// nftSockets are nftables sockets to be closed later. Closing a
// NETLINK_NETFILTER socket makes the kernel finish nf_tables' pending
// destroy work first (nft_rcv_nl_event flushes it), and that work waits for
// an RCU grace period whenever a transaction anywhere on the machine
// deleted something just before: 10-25 ms here, more than doubling a
// Close. So nftables sockets are pooled while links exist, and after the
// last link they are closed once its veth is deleted, which waits for
// grace periods of its own and leaves that work done.
type nftSockets struct {
	conns []*nftables.Conn
	raw   *netlink.Conn // for the generation-checked table delete
}

func (s *nftSockets) conn(host *netns.Handle) (*nftables.Conn, error) {
	if len(s.conns) > 0 {
		return s.conns[0], nil
	}
	c, err := nftConn(host)
	if err == nil {
		s.conns = append(s.conns, c)
	}
	return c, err
}

func (s *nftSockets) rawConn(host *netns.Handle) (*netlink.Conn, error) {
	if s.raw != nil {
		return s.raw, nil
	}
	var err error
	s.raw, err = dialNFT(host)
	return s.raw, err
}

func (s *nftSockets) close() {
	for _, c := range s.conns {
		c.CloseLasting()
	}
	if s.raw != nil {
		s.raw.Close()
	}
	*s = nftSockets{}
}

// conn returns an idle host socket, or dials one.
func (hs *hostState) conn(host *netns.Handle) (*nl.Conn, error) {
	if c, ok := takeIdle(hs, &hs.conns); ok {
		return c, nil
	}
	return nl.Dial(host)
}

// takeIdle takes the last idle connection of pool, a pool of hs.
func takeIdle[C any](hs *hostState, pool *[]C) (c C, ok bool) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if n := len(*pool); n > 0 {
		c, *pool = (*pool)[n-1], (*pool)[:n-1]
		return c, true
	}
	return c, false
}

// putConn keeps c for the next operation while links exist.
func (hs *hostState) putConn(c *nl.Conn) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.links > 0 && len(hs.conns) < 4 {
		hs.conns = append(hs.conns, c)
		return
	}
	c.Close()
}

var registry = struct {
	sync.Mutex
	hosts    map[uint64]*hostState
	prefixes map[uint64][]netip.Prefix // host ns → live prefixes
	nss      map[uint64]bool           // connected namespaces
}{hosts: map[uint64]*hostState{}, prefixes: map[uint64][]netip.Prefix{}, nss: map[uint64]bool{}}

// reserve records the prefix and namespace of a Link about to be made, so
// that concurrent Connects cannot both take them. Rules have no namespace
// of theirs: nsKey 0 reserves the prefix alone.
func reserve(hostKey, nsKey uint64, p netip.Prefix) (*hostState, error) {
	registry.Lock()
	defer registry.Unlock()
	if nsKey != 0 && registry.nss[nsKey] {
		return nil, fmt.Errorf("namespace net:[%d] is already connected: %w", nsKey, os.ErrExist)
	}
	for _, q := range registry.prefixes[hostKey] {
		if q.Overlaps(p) {
			return nil, fmt.Errorf("%w: %v is used by another link", ErrOverlap, q)
		}
	}
	if nsKey != 0 {
		registry.nss[nsKey] = true
	}
	registry.prefixes[hostKey] = append(registry.prefixes[hostKey], p)
	return hostForLocked(hostKey), nil
}

// hostFor returns this process's state of the host namespace hostKey.
func hostFor(hostKey uint64) *hostState {
	registry.Lock()
	defer registry.Unlock()
	return hostForLocked(hostKey)
}

func hostForLocked(hostKey uint64) *hostState {
	hs := registry.hosts[hostKey]
	if hs == nil {
		hs = &hostState{uplinks: map[int]*uplinkRef{}}
		registry.hosts[hostKey] = hs
	}
	return hs
}

func release(hostKey, nsKey uint64, p netip.Prefix) {
	registry.Lock()
	defer registry.Unlock()
	delete(registry.nss, nsKey)
	ps := registry.prefixes[hostKey]
	for i, q := range ps {
		if q == p {
			registry.prefixes[hostKey] = append(ps[:i:i], ps[i+1:]...)
			break
		}
	}
}

// isENOENT reports a missing table or set. google/nftables formats some
// receive errors with %v, which drops the errno from the chain, so the
// message is the fallback.
func isENOENT(err error) bool {
	return err != nil && (errors.Is(err, unix.ENOENT) || strings.HasSuffix(err.Error(), unix.ENOENT.Error()))
}

// dupHandle opens a handle of our own to h's namespace, so that Close
// works even if the caller has closed h by then. nil stays nil.
func dupHandle(h *netns.Handle) (*netns.Handle, error) {
	if h == nil {
		return nil, nil
	}
	fd, err := h.FD()
	if err != nil {
		return nil, err
	}
	return netns.OpenPath(fmt.Sprintf("/proc/self/fd/%d", fd))
}

// nftConn opens a lasting nftables connection in the host namespace, with
// a read buffer large enough for the acknowledgements of a big batch (the
// default one overflows with ENOBUFS at a few hundred messages).
func nftConn(host *netns.Handle) (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
		return c.SetReadBuffer(4 << 20)
	})}
	if host != nil {
		fd, err := host.FD()
		if err != nil {
			return nil, err
		}
		opts = append(opts, nftables.WithNetNSFd(fd))
	}
	return nftables.New(opts...)
}

// checkForeignDrop looks, once per host state (again after the last link
// went), for a forward base chain of another ip or inet table whose policy
// is drop, and fails with ErrForeignDrop naming it.
func (hs *hostState) checkForeignDrop(host *netns.Handle) error {
	hs.mu.Lock()
	checked, found := hs.dropChecked, hs.dropChain
	hs.mu.Unlock()
	if !checked {
		found = ""
		c, err := hs.nft(host)
		if err != nil {
			return err
		}
		chains, err := c.ListChains()
		hs.putNFT(c, err)
		if err != nil {
			return fmt.Errorf("list nftables chains: %w", err)
		}
		for _, ch := range chains {
			fam := ch.Table.Family
			if ch.Table.Name == TableName || (fam != nftables.TableFamilyIPv4 && fam != nftables.TableFamilyINet) ||
				ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward ||
				ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop {
				continue
			}
			family := "ip"
			if fam == nftables.TableFamilyINet {
				family = "inet"
			}
			found = fmt.Sprintf("%s %s %s", family, ch.Table.Name, ch.Name)
			break
		}
		hs.mu.Lock()
		hs.dropChecked, hs.dropChain = true, found
		hs.mu.Unlock()
	}
	if found != "" {
		return fmt.Errorf("%w: chain %q drops forwarded packets that nsnet's table accepts; accept the namespace's traffic there (see Config.AllowForeignDrop) and set AllowForeignDrop", ErrForeignDrop, found)
	}
	return nil
}

// prepareTable starts making the library's table if this process has not
// made or seen it in this host, and returns a function that waits for that
// and returns its error (nil at once when there was nothing to do).
// Concurrent callers share one attempt: a second creation would fail with
// EEXIST, and the kernel makes every failed nftables transaction wait for
// an RCU grace period (tens of milliseconds) while it undoes it. Another
// process making it first (EEXIST) is fine.
func (hs *hostState) prepareTable(host *netns.Handle) func() error {
	hs.mu.Lock()
	if hs.tableReady {
		hs.mu.Unlock()
		return func() error { return nil }
	}
	if hs.tableMaking == nil {
		making := &tableAttempt{done: make(chan struct{})}
		hs.tableMaking = making
		go func() {
			err := hook("nftables table")
			if err == nil {
				err = hs.flush(host, addSkeleton)
			}
			hs.mu.Lock()
			if err == nil || errors.Is(err, unix.EEXIST) {
				err = nil
				hs.tableReady = true
			}
			hs.tableMaking = nil
			hs.mu.Unlock()
			making.err = err
			close(making.done)
		}()
	}
	making := hs.tableMaking
	hs.mu.Unlock()
	return func() error {
		<-making.done
		return making.err
	}
}

// tableAttempt is one attempt at making the table, shared by the Connects
// that wait for it.
type tableAttempt struct {
	done chan struct{}
	err  error // set before done is closed
}

// addElements adds a link's elements in one transaction, creating the
// table in it too if this process has not seen it yet (see
// flushWithTable).
func (hs *hostState) addElements(host *netns.Handle, e elements) error {
	hs.mu.Lock()
	withTable := !hs.tableReady
	hs.mu.Unlock()
	return hs.flushWithTable(host, withTable, func(c *nftables.Conn) error { return e.apply(c, true) })
}

// flushWithTable commits queue's transaction, preceded by the table's
// creation with withTable. The table is created with NLM_F_EXCL, so if
// another process made it meanwhile the whole transaction fails and is
// retried without it; if it vanished (nft flush ruleset, another process's
// last Close), the retry goes the other way. Success means the table is
// there.
func (hs *hostState) flushWithTable(host *netns.Handle, withTable bool, queue func(*nftables.Conn) error) error {
	var err error
	for attempt := 0; attempt < 4; attempt++ {
		err = hs.flush(host, func(c *nftables.Conn) error {
			if withTable {
				if err := addSkeleton(c); err != nil {
					return err
				}
			}
			return queue(c)
		})
		switch {
		case err == nil:
			hs.mu.Lock()
			hs.tableReady = true
			hs.mu.Unlock()
			return nil
		case withTable && errors.Is(err, unix.EEXIST):
			withTable = false
		case !withTable && isENOENT(err):
			withTable = true
		default:
			return err
		}
	}
	return err
}

// flush queues a transaction with queue and commits it, on a pooled
// connection.
func (hs *hostState) flush(host *netns.Handle, queue func(*nftables.Conn) error) error {
	c, err := hs.nft(host)
	if err != nil {
		return err
	}
	err = queue(c)
	if err == nil {
		err = c.Flush()
	}
	hs.putNFT(c, err)
	return err
}

// nft returns an idle nftables connection of the host, or dials one.
func (hs *hostState) nft(host *netns.Handle) (*nftables.Conn, error) {
	if c, ok := takeIdle(hs, &hs.nfts); ok {
		return c, nil
	}
	return nftConn(host)
}

// putNFT keeps c for later while links exist (see nftSockets). A
// connection that saw an error is closed, never reused: a google/nftables
// Conn that failed to serialise a message stays failed.
func (hs *hostState) putNFT(c *nftables.Conn, err error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if err != nil || hs.links == 0 || len(hs.nfts) >= 4 {
		c.CloseLasting()
		return
	}
	hs.nfts = append(hs.nfts, c)
}

// dropTableIfUnused deletes the table when its links set is empty: no
// process has a link in it any more. dropped says whether this call
// deleted it.
func (hs *hostState) dropTableIfUnused(host *netns.Handle, socks *nftSockets) (dropped bool, err error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.links != 0 {
		return false, nil // a Connect came in meanwhile
	}
	raw, err := socks.rawConn(host)
	if err != nil {
		return false, err
	}
	c, err := socks.conn(host)
	if err != nil {
		return false, err
	}
	// Read the generation, check that no process has anything in the
	// table, and delete it only if nothing committed in between (another
	// process adding its entries): else look again.
	for attempt := 0; attempt < 5; attempt++ {
		gen, err := ruleGeneration(raw)
		if err != nil {
			return false, err
		}
		// Every Link and Rules has an entry in links, for as long as it
		// has any other entry (fwd included): links empty means unused.
		els, err := c.GetSetElements(setByName[setLinks])
		if isENOENT(err) {
			hs.tableReady = false
			return false, nil // gone already
		}
		if err != nil || len(els) > 0 {
			return false, err
		}
		err = delTableAtGen(raw, gen)
		if err == errGenChanged {
			continue
		}
		if err == nil {
			hs.tableReady = false
		}
		return err == nil, err
	}
	return false, nil // busy host: leave the empty table; the next last Close or Sweep removes it
}

type uplinkInfo struct {
	name  string
	index int
}

// inspectHost finds the uplink (or the default route's link), checks it is
// up with an IPv4 address, and, with checkOverlap, that cidr overlaps no
// route or address of the host (the local table lists the host's own
// addresses). Routes come from the host's route cache, so the cost does not
// grow with the number of links.
func inspectHost(hs *hostState, host *netns.Handle, hc *nl.Conn, uplink string, cidr netip.Prefix, checkOverlap bool) (uplinkInfo, error) {
	// The uplink named: its index is known before the cache is looked at.
	upIdx := 0
	var linkMsg []byte
	if uplink != "" {
		msgs, err := hc.Query(nl.GetLinkByName(uplink))
		if err != nil {
			return uplinkInfo{}, fmt.Errorf("uplink %q: %w", uplink, err)
		}
		linkMsg = msgs[0].Data
		l, err := nl.DecodeLink(linkMsg)
		if err != nil {
			return uplinkInfo{}, err
		}
		upIdx = int(l.Index)
	}
	hs.mu.Lock()
	if err := hs.routes.refresh(host, hc); err != nil {
		hs.mu.Unlock()
		return uplinkInfo{}, fmt.Errorf("host routes: %w", err)
	}
	var overlap error
	if checkOverlap {
		overlap = hs.routes.overlap(cidr)
	}
	if uplink == "" {
		upIdx = hs.routes.defaultLink()
	}
	hasV4 := hs.routes.locals[upIdx] > 0
	hs.mu.Unlock()
	if uplink == "" {
		if upIdx == 0 {
			return uplinkInfo{}, fmt.Errorf("no uplink given and the host has no IPv4 default route: %w", nl.Wrap(unix.ENODEV))
		}
		msgs, err := hc.Query(nl.GetLinkByIndex(upIdx))
		if err != nil {
			return uplinkInfo{}, fmt.Errorf("default route's link: %w", err)
		}
		linkMsg = msgs[0].Data
	}
	link, err := nl.DecodeLink(linkMsg)
	if err != nil {
		return uplinkInfo{}, err
	}
	up := uplinkInfo{name: link.Attributes.Name, index: int(link.Index)}
	switch {
	case link.Flags&unix.IFF_UP == 0:
		return up, fmt.Errorf("uplink %q is down: bring it up first", up.name)
	case !hasV4:
		return up, fmt.Errorf("uplink %q has no IPv4 address: masquerading needs one", up.name)
	}
	return up, overlap
}
