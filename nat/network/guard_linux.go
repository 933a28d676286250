package network

import (
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/bridgeset"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/nat/internal/table"
	"github.com/nsnet/nsnet/netns"
)

// A firewall reload (nft flush ruleset) deletes the bridge table with
// everything else: the library's inet table comes back by nat's own guard
// (the network's entries are those of a nat.Rules), and this guard makes
// the bridge table again with the entries of every live member of the
// process's networks in that host. One goroutine per host namespace with
// networks in it looks every guardEvery (one request: does the table
// exist?), and stops with the host's last network.
const guardEvery = 50 * time.Millisecond

var guards = struct {
	sync.Mutex
	m map[uint64]*guard
}{m: map[uint64]*guard{}}

// guard is one host's; nets is guarded by guards' lock.
type guard struct {
	host *netns.Handle
	nets map[*state]bool
	stop chan struct{}
	done chan struct{}
}

func guardAdd(st *state) {
	guards.Lock()
	defer guards.Unlock()
	g := guards.m[st.hostKey]
	if g == nil {
		host, err := nl.DupHandle(st.host)
		if err != nil {
			return // (no guard: the next network's Create tries again)
		}
		g = &guard{host: host, nets: map[*state]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
		guards.m[st.hostKey] = g
		go g.run()
	}
	g.nets[st] = true
}

// guardRemove stops guarding st, and waits for the guard to end after the
// host's last network.
func guardRemove(st *state) {
	guards.Lock()
	g := guards.m[st.hostKey]
	if g == nil {
		guards.Unlock()
		return
	}
	delete(g.nets, st)
	last := len(g.nets) == 0
	if last {
		delete(guards.m, st.hostKey)
	}
	guards.Unlock()
	if last {
		close(g.stop)
		<-g.done
	}
}

func (g *guard) run() {
	defer close(g.done)
	defer g.host.Close()
	t := time.NewTicker(guardEvery)
	defer t.Stop()
	var c *nftables.Conn
	defer func() {
		if c != nil {
			c.CloseLasting()
		}
	}()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		if c == nil {
			var err error
			if c, err = table.NFTConn(g.host); err != nil {
				continue
			}
		}
		if _, err := c.ListTableOfFamily(bridgeset.TableName, nftables.TableFamilyBridge); !nftset.IsENOENT(err) {
			continue
		}
		g.restore()
	}
}

// restore makes the table again with the live members' entries (not
// exclusive: a member attached meanwhile may have put its own back).
func (g *guard) restore() {
	guards.Lock()
	var els []nftset.Elem
	for st := range g.nets {
		st.mu.Lock()
		for m := range st.members {
			els = append(els, m.ent.Elems()...)
		}
		st.mu.Unlock()
	}
	guards.Unlock()
	if len(els) > 0 {
		commitBridge(g.host, els, true, false)
	}
}
