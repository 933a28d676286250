package firewall

import (
	"slices"
	"sync"

	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/netns"
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
	conf       *nl.Watch // rtnetlink netconf notifications (nil if it could not be had)
	dirty      bool      // a table, chain or rule changed since the last look
	checked    bool      // view holds a look
	view       View
	legacyDrop bool  // the legacy FORWARD policy, read once (it sends no notifications)
	legacyErr  error // and the error reading it
}

// NewMonitor follows the ruleset through w (a socket on NFNLGRP_NFTABLES
// in the host), with what the first link found of the legacy iptables
// FORWARD policy, and the host's forwarding switches (see ForwardingOn).
func NewMonitor(host *netns.Handle, w *nl.Watch, legacyDrop bool, legacyErr error) *Monitor {
	conf, _ := nl.DialWatch(host, unix.RTNLGRP_IPV4_NETCONF, unix.RTNLGRP_IPV6_NETCONF)
	return &Monitor{watch: w, conf: conf, dirty: true, legacyDrop: legacyDrop, legacyErr: legacyErr}
}

// ForwardingOn returns the families (unix.NFPROTO_IPV4, _IPV6) whose
// forwarding someone turned on for every interface (net.ipv4.ip_forward,
// net.ipv6.conf.all.forwarding) since the last call, as the kernel's
// netconf notifications say: a container engine started after nsnet, or
// the host's owner, chose to forward (see uplinks.Shares.Withdraw).
func (m *Monitor) ForwardingOn() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conf == nil {
		return nil
	}
	var fams []byte
	m.conf.Poll(func(typ, _ uint16, body []byte) {
		if typ != unix.RTM_NEWNETCONF || len(body) < 4 {
			return
		}
		ad, err := netlink.NewAttributeDecoder(body[4:])
		if err != nil {
			return
		}
		index, fwd := int32(0), int32(-1)
		for ad.Next() {
			switch ad.Type() {
			case netconfIfindex:
				index = int32(ad.Uint32())
			case netconfForwarding:
				fwd = int32(ad.Uint32())
			}
		}
		// (AF_INET and AF_INET6 are NFPROTO_IPV4 and _IPV6.)
		if index == netconfIfindexAll && fwd == 1 && !slices.Contains(fams, body[0]) {
			fams = append(fams, body[0])
		}
	})
	return fams
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

// From linux/netconf.h (not in x/sys/unix).
const (
	netconfIfindex    = 1  // NETCONFA_IFINDEX
	netconfForwarding = 2  // NETCONFA_FORWARDING
	netconfIfindexAll = -1 // NETCONFA_IFINDEX_ALL: net.*.conf.all
)

// Close closes the sockets.
func (m *Monitor) Close() error {
	if m.conf != nil {
		m.conf.Close()
	}
	return m.watch.Close()
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
