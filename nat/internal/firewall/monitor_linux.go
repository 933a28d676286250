package firewall

import (
	"sync"

	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"golang.org/x/sys/unix"
)

// Monitor follows the host's nftables ruleset for a process while it has
// links there, through a socket subscribed to nftables notifications and
// read without waiting (Poll): the guard learns that the library's table
// or Docker's tables were changed (a firewall reload), and the check of
// other firewalls (View) looks again only after a table, chain or rule
// changed. Safe for concurrent use: mu guards everything, and is held
// only while the socket's queue is read, never across a kernel request.
type Monitor struct {
	mu         sync.Mutex
	watch      *nl.Watch
	dirty      bool // a table, chain or rule changed since the last look
	checked    bool // view holds a look
	view       View
	legacyDrop bool  // the legacy FORWARD policy, read once (it sends no notifications)
	legacyErr  error // and the error reading it
}

// NewMonitor follows the ruleset through w (a socket on NFNLGRP_NFTABLES
// in the host), with what the first link found of the legacy iptables
// FORWARD policy.
func NewMonitor(w *nl.Watch, legacyDrop bool, legacyErr error) *Monitor {
	return &Monitor{watch: w, dirty: true, legacyDrop: legacyDrop, legacyErr: legacyErr}
}

// Poll reads the notifications queued since the last look: tableLost says
// the library's table was deleted (or notifications were lost: then
// everything is assumed), docker that Docker's tables changed.
func (m *Monitor) Poll() (tableLost, docker bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.watch.Poll(func(typ, _ uint16, body []byte) {
		switch typ {
		case nftset.NFTType | unix.NFT_MSG_DELTABLE:
			tableLost = tableLost || tableOf(body, unix.NFPROTO_INET) == nftset.TableName
			docker = docker || inDockerTable(body)
			m.dirty = true
		case nftset.NFTType | unix.NFT_MSG_DELCHAIN, nftset.NFTType | unix.NFT_MSG_DELRULE, nftset.NFTType | unix.NFT_MSG_NEWCHAIN:
			docker = docker || inDockerTable(body)
			m.dirty = true
		case nftset.NFTType | unix.NFT_MSG_NEWTABLE, nftset.NFTType | unix.NFT_MSG_NEWRULE:
			m.dirty = true
		}
	})
	if err != nil {
		m.dirty = true // lost notifications: make sure
		return true, true
	}
	return tableLost, docker
}

// View returns what the other firewalls look like, calling look (a look
// at the ruleset, see Look) at the first call and again whenever
// notifications said that a table, chain or rule changed since (the
// caller polls first); the legacy table is what NewMonitor was given.
func (m *Monitor) View(look func() (View, error)) (View, error) {
	m.mu.Lock()
	again := m.dirty || !m.checked
	m.dirty = false
	view := m.view
	m.mu.Unlock()
	if !again {
		return view, nil
	}
	view, err := look()
	if err == nil {
		view.LegacyDrop, err = m.legacyDrop, m.legacyErr
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.dirty = true // look again next time
		return view, err
	}
	m.checked, m.view = true, view
	return view, nil
}

// Close closes the socket.
func (m *Monitor) Close() error { return m.watch.Close() }

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
