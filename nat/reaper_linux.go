package nat

// The reaper. Deleting a link makes the kernel wait for an RCU grace period
// (10-40 ms here: see README, Tear-down), and so does closing the last
// nftables socket after a commit that deleted something. Close does neither
// itself: it stops all traffic through the link, frees its names, prefix
// and entries, and hands the host end of the veth (and, after a process's
// last link, its idle sockets) to a reaper goroutine of the host namespace,
// which deletes every link handed to it meanwhile in one device-group
// request (one grace period for all of them) and closes the sockets after.
// When the connected namespace goes away first, the kernel deletes the
// pair with it (the peer's namespace is destroyed, and a veth's two ends go
// together), so Close + netns.Delete leaves nothing for the reaper.
//
// A process that exits before its reaper ran leaves the host end, down,
// renamed and without address, marked as its own: Sweep removes it, as
// anything else a dead owner left, and the kernel with the namespace. Drain
// waits for the reapers (programs that exit right after closing call it).

import (
	"sync"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
)

var reaper = struct {
	sync.Mutex
	hosts   map[uint64]*reapQueue
	pending map[uint64]int // links handed over and not deleted yet, by host
}{hosts: map[uint64]*reapQueue{}, pending: map[uint64]int{}}

// reapPending is how many links of the host wait for the reaper: while
// any does, the process keeps its owner socket there (see releaseOwner).
func reapPending(hostKey uint64) int {
	reaper.Lock()
	defer reaper.Unlock()
	return reaper.pending[hostKey]
}

// reapQueue is the work pending for one host namespace.
type reapQueue struct {
	host  *netns.Handle // the reaper's own handle
	links []int         // interface indexes of host ends to delete
	socks []idleSockets // to close after them
	done  chan struct{} // closed when the reaper ends
}

// reapLater hands the host end index (0: none) and the sockets to the
// reaper of host, starting it if none runs. When no reaper can be started
// (no handle to the host), it does the work at once.
func reapLater(host *netns.Handle, hostKey uint64, index int, socks idleSockets) {
	reaper.Lock()
	q := reaper.hosts[hostKey]
	if q == nil {
		dup, err := dupHandle(host)
		if err != nil {
			reaper.Unlock()
			if index != 0 {
				reapNow(host, []int{index})
			}
			socks.close()
			return
		}
		q = &reapQueue{host: dup, done: make(chan struct{})}
		reaper.hosts[hostKey] = q
		go q.run(hostKey)
	}
	if index != 0 {
		q.links = append(q.links, index)
		reaper.pending[hostKey]++
	}
	q.socks = append(q.socks, socks)
	reaper.Unlock()
}

// run deletes what is queued, in batches, until nothing is left.
func (q *reapQueue) run(hostKey uint64) {
	defer close(q.done)
	defer q.host.Close()
	for {
		reaper.Lock()
		links, socks := q.links, q.socks
		q.links, q.socks = nil, nil
		if len(links) == 0 && len(socks) == 0 {
			delete(reaper.hosts, hostKey)
			reaper.Unlock()
			return
		}
		reaper.Unlock()
		reapNow(q.host, links)
		reaper.Lock()
		if reaper.pending[hostKey] -= len(links); reaper.pending[hostKey] <= 0 {
			delete(reaper.pending, hostKey)
		}
		reaper.Unlock()
		for _, s := range socks {
			s.close() // after the delete (see leave); the owner socket last
		}
	}
}

// reapNow deletes the links (interface indexes) of host in one request;
// those gone already (with their namespace) are no matter.
func reapNow(host *netns.Handle, links []int) {
	if len(links) == 0 {
		return
	}
	hc, err := nl.Dial(host)
	if err != nil {
		return // Sweep, or the namespace's end, takes them
	}
	defer hc.Close()
	deleteInGroup(hc, links)
}

// sysDrain is Drain on Linux.
func sysDrain() {
	for {
		reaper.Lock()
		var q *reapQueue
		for _, x := range reaper.hosts {
			q = x
			break
		}
		reaper.Unlock()
		if q == nil {
			return
		}
		<-q.done
	}
}
