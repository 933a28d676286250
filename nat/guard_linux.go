package nat

import (
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// A firewall reload (nft flush ruleset, systemctl restart nftables, a
// firewalld reload) deletes the library's table while links are live:
// their isolation and masquerade are gone, and the outside may reach the
// namespaces. While a process has links in a host namespace it keeps a
// socket there subscribed to nftables notifications, read without waiting
// (as the route cache reads its own): at every Connect, and every
// guardEvery by a guard goroutine. When the table was deleted, the process
// makes it again with the entries of every live Link and Rules of its own
// (each process restores its own). The same notifications tell the
// other-firewall check (firewall_linux.go) when to look again.
//
// A goroutine blocked on the socket instead would react at once, but it
// woke on every commit of every Connect (each adds set entries, and
// nftables notifies them), which the bench program measured as a cost
// per Connect; the ticker's is not measurable (README, Benchmarks).
const guardEvery = 200 * time.Millisecond

// startGuard starts the guard of a host state that just got its first
// link, with its notification socket w; leave stops it.
func (hs *hostState) startGuard(host *netns.Handle, w *nl.Watch) {
	hs.fwMu.Lock()
	hs.fwWatch, hs.fwDirty = w, true
	hs.fwMu.Unlock()
	stop := make(chan struct{})
	hs.guardStop = stop
	go func() {
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
}

// pollNFT reads the notifications queued since the last look: a changed
// table, chain or rule marks the firewall check dirty; the library's table
// deleted (or notifications lost) makes restore run.
func (hs *hostState) pollNFT(host *netns.Handle) {
	hs.fwMu.Lock()
	if hs.fwWatch == nil {
		hs.fwMu.Unlock()
		return
	}
	lost, docker := false, false
	err := hs.fwWatch.Poll(func(typ, _ uint16, body []byte) {
		switch typ {
		case nftset.NFTType | unix.NFT_MSG_DELTABLE:
			lost = lost || deletesOurTable(body)
			docker = docker || inDockerTable(body)
			hs.fwDirty = true
		case nftset.NFTType | unix.NFT_MSG_DELCHAIN, nftset.NFTType | unix.NFT_MSG_DELRULE, nftset.NFTType | unix.NFT_MSG_NEWCHAIN:
			docker = docker || inDockerTable(body)
			hs.fwDirty = true
		case nftset.NFTType | unix.NFT_MSG_NEWTABLE, nftset.NFTType | unix.NFT_MSG_NEWRULE:
			hs.fwDirty = true
		}
	})
	if err != nil {
		hs.fwDirty, lost, docker = true, true, true // lost notifications: make sure
	}
	hs.fwMu.Unlock()
	if lost {
		hs.restore(host)
	}
	if docker {
		hs.restoreDockerUser(host)
	}
}

// tableOf returns the table an nftables table, chain or rule notification
// is about, for family fam only ("" otherwise): the first attribute of
// each, NFTA_{TABLE_NAME,CHAIN_TABLE,RULE_TABLE} (all 1), names the table.
func tableOf(b []byte, fam byte) string {
	if len(b) < nftset.NfgenmsgLen || b[0] != fam {
		return ""
	}
	ad, err := netlink.NewAttributeDecoder(b[nftset.NfgenmsgLen:])
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_TABLE_NAME {
			return ad.String()
		}
	}
	return ""
}

// inDockerTable reports whether a notification is for table ip filter
// or ip6 filter (Docker's, see dockeruser_linux.go).
func inDockerTable(b []byte) bool {
	return tableOf(b, unix.NFPROTO_IPV4) == dockerTable.Name || tableOf(b, unix.NFPROTO_IPV6) == dockerTable6.Name
}

// deletesOurTable reports whether an NFT_MSG_DELTABLE notification is for
// the library's table (family inet, name nsnet).
func deletesOurTable(b []byte) bool { return tableOf(b, unix.NFPROTO_INET) == TableName }

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
	var users []nftset.Elem
	for k, ref := range hs.uplinks {
		if ref.registered {
			users = append(users, userElem(k, ref.origOff))
			if ref.origOff {
				users = append(users, openedElem(k))
			}
		}
	}
	hs.mu.Unlock()
	if len(all) == 0 {
		return
	}
	hs.tableGone()
	var b nftset.Batch
	for _, e := range all {
		b.Add(e.Elems(), false)
		b.Add(e.Covers(), false)
	}
	b.Add(users, false)
	hs.commitEntries(host, &b)
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
