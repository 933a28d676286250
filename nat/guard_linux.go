package nat

import (
	"time"

	"github.com/google/nftables"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/firewall"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/netns"
)

// A firewall reload (nft flush ruleset, systemctl restart nftables, a
// firewalld reload) deletes the library's table while links are live:
// their isolation and masquerade are gone (with the namespace's last NAT
// chain the kernel unregisters its NAT hooks: established connections are
// not translated either), and the outside may reach the namespaces. While
// a process has links in a host namespace it keeps a socket there
// subscribed to nftables notifications, read without waiting (as the
// route cache reads its own): at every Connect, and every guardEvery by a
// guard goroutine. When the table was deleted, the process makes it again
// with the entries of every live Link and Rules of its own (each process
// restores its own). The same notifications tell the other-firewall check
// (package firewall) when to look again.
//
// The window between a flush and the restore is guardEvery plus one
// transaction: 20 ms let 2-3% of a saturating UDP stream out
// un-masqueraded across five reloads, where 200 ms let 35% out
// (TestStress logs it). A read that finds nothing costs one system call.
// A goroutine blocked on the socket would react at once, but it woke on
// every commit of every Connect (each adds set entries, and nftables
// notifies them), which the bench program measured as a cost per Connect.
const guardEvery = 20 * time.Millisecond

// startGuard starts the guard of a host state that just got its first
// link, with its ruleset monitor fw; leave stops it. The guard has a
// handle of its own to the host namespace: the caller's goes with its
// link, and the guard outlives that link while others live. The caller
// holds hs.ownerMu.
func (hs *hostState) startGuard(host *netns.Handle, fw *firewall.Monitor) error {
	host, err := nl.DupHandle(host)
	if err != nil {
		return err
	}
	hs.fw = fw
	stop := make(chan struct{})
	hs.guardStop = stop
	go func() {
		defer host.Close()
		t := time.NewTicker(guardEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				hs.pollNFT(host)
			}
		}
	}()
	return nil
}

// pollNFT reads the notifications queued since the last look: the
// library's table deleted (or notifications lost) makes restore run, a
// change of Docker's tables restoreDockerUser, a family's forwarding
// turned on everywhere Withdraw.
func (hs *hostState) pollNFT(host *netns.Handle) {
	fw := hs.monitor()
	if fw == nil {
		return
	}
	lost, docker := fw.Poll()
	if lost {
		hs.restore(host)
	}
	if docker {
		hs.restoreDockerUser(host)
	}
	for _, fam := range fw.ForwardingOn() {
		hs.shares.Withdraw(host, &hs.tbl, fam)
	}
}

// restore makes the table again with the entries of the process's live
// links, if it has any. Adds are not exclusive here: entries already back
// (a Connect of this process that made the table meanwhile) are no error.
// An error has no caller to go to: the next look tries again, and the
// next Close reports what is missing. It holds restoreMu: no live link's
// entries change between its snapshot and its commit.
func (hs *hostState) restore(host *netns.Handle) {
	hs.restoreMu.Lock()
	defer hs.restoreMu.Unlock()
	hs.mu.Lock()
	var all []nftset.Entries
	for o := range hs.live {
		all = append(all, o.ent)
	}
	hs.mu.Unlock()
	users := hs.shares.Elems()
	if len(all) == 0 {
		return
	}
	hs.tbl.Gone()
	var b nftset.Batch
	for _, e := range all {
		b.Add(e.Elems(), false)
		b.Add(e.Covers(), false)
	}
	b.Add(users, false)
	hs.tbl.CommitEntries(host, &b)
}

// addLive and removeLive keep the list of what restore makes again
// (removeLive under restoreMu, shared).
func (hs *hostState) addLive(o *owned) {
	hs.mu.Lock()
	hs.live[o] = true
	hs.mu.Unlock()
}

func (hs *hostState) removeLive(o *owned) {
	hs.mu.Lock()
	delete(hs.live, o)
	hs.mu.Unlock()
}

// restoreDockerUser puts back the DOCKER-USER rules of live links that
// lack them (see firewall.RestoreDockerUser), holding restoreMu as
// restore does.
func (hs *hostState) restoreDockerUser(host *netns.Handle) {
	hs.restoreMu.Lock()
	defer hs.restoreMu.Unlock()
	var links []firewall.DockerUserLink
	hs.mu.Lock()
	for o := range hs.live {
		if o.dockerUser != "" {
			links = append(links, firewall.DockerUserLink{Name: o.vethName, Comment: o.dockerUser, Fams: o.nets.Families()})
		}
	}
	hs.mu.Unlock()
	if len(links) == 0 {
		return
	}
	hs.tbl.WithNFT(host, func(c *nftables.Conn) error { return firewall.RestoreDockerUser(c, links) })
}

// acceptInDockerUser and dropDockerUser are the firewall package's, on an
// idle nftables connection of the host state.
func (hs *hostState) acceptInDockerUser(host *netns.Handle, fams []byte, name, comment string) error {
	return hs.tbl.WithNFT(host, func(c *nftables.Conn) error { return firewall.AcceptInDockerUser(c, fams, name, comment) })
}

func (hs *hostState) dropDockerUser(host *netns.Handle, comments map[string]int) error {
	return hs.tbl.WithNFT(host, func(c *nftables.Conn) error { return firewall.DropDockerUser(c, comments) })
}
