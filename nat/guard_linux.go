package nat

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// A firewall reload (nft flush ruleset, systemctl restart nftables, a
// firewalld reload) deletes the library's table while links are live:
// their isolation and masquerade are gone, and the outside may reach the
// namespaces. While a process has links in a host namespace, a guard
// goroutine listens to nftables notifications there and, when the table is
// deleted, makes it again with the entries of every live Link and Rules of
// the process (each process restores its own), within milliseconds.

// guard runs until its socket is closed (see stopGuard).
func (hs *hostState) guard(host *netns.Handle, c *netlink.Conn) {
	for {
		msgs, err := c.Receive()
		if err != nil {
			var oe *netlink.OpError
			if errors.As(err, &oe) && errors.Is(oe.Err, unix.ENOBUFS) {
				hs.restore(host) // notifications lost: make sure
				continue
			}
			return // closed: the process's last link went
		}
		for _, m := range msgs {
			if uint16(m.Header.Type) == nftType|unix.NFT_MSG_DELTABLE && deletesOurTable(m.Data) {
				hs.restore(host)
				break
			}
		}
	}
}

// deletesOurTable reports whether an NFT_MSG_DELTABLE notification is for
// the library's table (family ip, name nsnet).
func deletesOurTable(b []byte) bool {
	if len(b) < nfgenmsgLen || b[0] != unix.AF_INET {
		return false
	}
	ad, err := netlink.NewAttributeDecoder(b[nfgenmsgLen:])
	if err != nil {
		return false
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_TABLE_NAME {
			return ad.String() == TableName
		}
	}
	return false
}

// restore makes the table again with the entries of the process's live
// links, if it still has any. Entries already back (another process made
// the table first and Connects raced) are no error: adds are not
// exclusive here.
func (hs *hostState) restore(host *netns.Handle) {
	hs.mu.Lock()
	var all []entries
	for o := range hs.live {
		all = append(all, o.ent)
	}
	var users []elem
	for idx, ref := range hs.uplinks {
		if ref.registered {
			mark := ownerMark + origOn
			if ref.origOff {
				mark = ownerMark + origOff
			}
			users = append(users, elem{set: setUplinks, key: uplinkKey(idx, ownerID), comment: mark})
			if ref.origOff {
				users = append(users, openedElem(idx))
			}
		}
	}
	hs.mu.Unlock()
	if len(all) == 0 {
		return
	}
	hs.tableGone()
	var b batch
	for _, e := range all {
		b.add(e.elems(), false)
		b.add(e.covers(), false)
	}
	b.add(users, false)
	// An error has no caller to go to: the next Close reports what is
	// missing, and the next change of the table tries again.
	hs.commitEntries(host, &b)
}

// startGuard starts the guard of a host state that just got its first
// link.
func (hs *hostState) startGuard(host *netns.Handle) error {
	cfg, err := nl.Config(host)
	if err != nil {
		return err
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	runtime.KeepAlive(host)
	if err != nil {
		return fmt.Errorf("dial nftables notifications: %w", err)
	}
	if err := c.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		c.Close()
		return fmt.Errorf("join nftables notifications: %w", err)
	}
	_ = c.SetReadBuffer(4 << 20)
	hs.guardConn = c
	go hs.guard(host, c)
	return nil
}

// addLive and removeLive keep the guard's list of what to restore.
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
