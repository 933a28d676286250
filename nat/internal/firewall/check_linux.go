package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"unsafe"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"golang.org/x/sys/unix"
)

// Other firewalls. An accept in nsnet's table does not override a drop in
// another table on the same hook, so a host whose forward path ends in a
// drop or reject elsewhere silently kills the links' traffic. Connect looks
// for the common shapes before it makes anything:
//
//   - an nftables forward base chain (family ip or inet) of another table
//     whose policy is drop (Docker with iptables-nft: ip filter FORWARD);
//   - one whose last rule drops or rejects unconditionally (firewalld's
//     filter_FORWARD ends in "reject with icmpx admin-prohibited";
//     "iptables -A FORWARD -j DROP");
//   - the legacy x_tables filter table's FORWARD policy drop (Docker on the
//     legacy backend), read through its socket options, and only if the
//     table already exists in the namespace (net/ip_tables_names):
//     asking for a table that does not exist would make the kernel create
//     it.
//
// The nftables check runs again at a Connect only when a notification
// says that a table, chain or rule changed since the last one (see
// guard_linux.go: a socket on NFNLGRP_NFTABLES, read without waiting); the
// legacy table, which sends none, is read at the first Connect of a host
// state. A listing that races with a change (google/nftables does not
// look at NLM_F_DUMP_INTR) is corrected at the next Connect: the change's
// notification marks the view stale.

// dropFinding is one chain of another firewall that drops what nsnet
// forwards.
type dropFinding struct {
	chain string // as "ip filter FORWARD (policy drop)"
	// viaDockerUser: the chain is Docker's (ip filter FORWARD) and its
	// first rule jumps to DOCKER-USER, where Config.DockerUser accepts the
	// links' packets before the rest of the chain sees them.
	viaDockerUser bool
	// fam is the family the chain filters (unix.NFPROTO_IPV4 or _IPV6),
	// 0 for both (an inet table).
	fam byte
}

// View is what one look at the other firewalls found.
type View struct {
	drops []dropFinding
	// dockerUser says, per family (unix.NFPROTO_IPV4, _IPV6), that
	// Docker's table (ip filter, ip6 filter) has a chain DOCKER-USER
	// (iptables-nft).
	DockerUser map[byte]bool
	LegacyDrop bool // the legacy iptables FORWARD policy is DROP
}

// Problem names the first chain that drops the packets of a link of the
// families fams and says what to do (nat wraps it in ErrForeignDrop); ""
// if none does.
func (v View) Problem(dockerUser bool, fams []byte) string {
	if chain := v.drop(dockerUser, fams); chain != "" {
		hint := "accept the links' traffic there (see Config.AllowForeignDrop) and set AllowForeignDrop"
		if !dockerUser && (v.DockerUser[unix.NFPROTO_IPV4] && strings.HasPrefix(chain, "ip "+dockerTable.Name+" ") ||
			v.DockerUser[unix.NFPROTO_IPV6] && strings.HasPrefix(chain, "ip6 "+dockerTable6.Name+" ")) {
			hint = "set Config.DockerUser to accept the links' traffic in Docker's DOCKER-USER chain, or " + hint
		}
		return fmt.Sprintf("%s drops forwarded packets that nsnet's table accepts; %s", chain, hint)
	}
	if v.LegacyDrop && slices.Contains(fams, unix.NFPROTO_IPV4) {
		hint := "accept the links' traffic there (see Config.AllowForeignDrop) and set AllowForeignDrop"
		if dockerUser {
			hint = "nsnet adds to DOCKER-USER through nftables only (iptables-nft); on the legacy backend run once " +
				"\"iptables -I DOCKER-USER -i nsn-+ -j ACCEPT\" and \"iptables -I DOCKER-USER -o nsn-+ -j ACCEPT\" " +
				"(nsnet's own table still filters the links' traffic) and set AllowForeignDrop"
		}
		return fmt.Sprintf("legacy iptables filter FORWARD (policy DROP) drops forwarded packets that nsnet's table accepts; %s", hint)
	}
	return ""
}

// drop returns the first finding that drops packets of the families fams,
// "" if none: with dockerUser, Docker's FORWARD chain does not once nsnet
// accepts them in DOCKER-USER.
func (v View) drop(dockerUser bool, fams []byte) string {
	for _, d := range v.drops {
		if d.fam != 0 && !slices.Contains(fams, d.fam) {
			continue
		}
		if !(dockerUser && d.viaDockerUser && v.DockerUser[d.fam]) {
			return d.chain
		}
	}
	return ""
}

// Look finds every forward chain of another table that drops or
// rejects everything (see above), and Docker's DOCKER-USER chain.
func Look(c *nftables.Conn) (View, error) {
	var v View
	chains, err := c.ListChains()
	if err != nil {
		return v, fmt.Errorf("list nftables chains: %w", err)
	}
	for _, ch := range chains {
		fam := ch.Table.Family
		if (fam == nftables.TableFamilyIPv4 || fam == nftables.TableFamilyIPv6) && ch.Table.Name == dockerTable.Name && ch.Name == dockerUserChain {
			if v.DockerUser == nil {
				v.DockerUser = map[byte]bool{}
			}
			v.DockerUser[byte(fam)] = true
		}
		if (fam == nftables.TableFamilyINet && ch.Table.Name == nftset.TableName) ||
			(fam != nftables.TableFamilyIPv4 && fam != nftables.TableFamilyIPv6 && fam != nftables.TableFamilyINet) ||
			ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward {
			continue
		}
		family, only := "ip", byte(unix.NFPROTO_IPV4)
		switch fam {
		case nftables.TableFamilyINet:
			family, only = "inet", 0
		case nftables.TableFamilyIPv6:
			family, only = "ip6", unix.NFPROTO_IPV6
		}
		name := fmt.Sprintf("%s %s %s", family, ch.Table.Name, ch.Name)
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return v, fmt.Errorf("list rules of %s: %w", name, err)
		}
		via := (fam == nftables.TableFamilyIPv4 || fam == nftables.TableFamilyIPv6) && ch.Table.Name == dockerTable.Name &&
			len(rules) > 0 && jumpsTo(rules[0], dockerUserChain)
		if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
			v.drops = append(v.drops, dropFinding{name + " (policy drop)", via, only})
		} else if len(rules) > 0 && dropsAll(rules[len(rules)-1]) {
			v.drops = append(v.drops, dropFinding{name + " (its last rule drops or rejects everything)", via, only})
		}
	}
	return v, nil
}

// jumpsTo reports whether a rule jumps to chain unconditionally, as
// iptables-nft's "-A FORWARD -j DOCKER-USER" does.
func jumpsTo(r *nftables.Rule, chain string) bool {
	jumps := false
	for _, e := range r.Exprs {
		switch v := e.(type) {
		case *expr.Counter:
		case *expr.Verdict:
			jumps = v.Kind == expr.VerdictJump && v.Chain == chain
		default:
			return false
		}
	}
	return jumps
}

// dropsAll reports whether a rule drops or rejects every packet: it has no
// match, only counters, logging and the verdict.
func dropsAll(r *nftables.Rule) bool {
	drops := false
	for _, e := range r.Exprs {
		switch v := e.(type) {
		case *expr.Counter, *expr.Log:
		case *expr.Verdict:
			drops = v.Kind == expr.VerdictDrop
		case *expr.Reject:
			drops = true
		default:
			return false // a match: not every packet
		}
	}
	return drops
}

// LegacyForwardDropHere reports whether the legacy iptables filter table
// of the calling thread's namespace exists and its FORWARD chain's policy
// is DROP.
func LegacyForwardDropHere() (bool, error) {
	// thread-self: /proc/net is the main thread's namespace, not this one's.
	names, err := os.ReadFile("/proc/thread-self/net/ip_tables_names")
	if err != nil || !strings.Contains("\n"+string(names), "\nfilter\n") {
		return false, nil // no legacy filter table here (or no x_tables at all)
	}
	return legacyPolicyDrop()
}

// x_tables' getsockopt interface (linux/netfilter_ipv4/ip_tables.h).
const (
	iptSoGetInfo    = 64 // IPT_SO_GET_INFO, not in x/sys
	iptSoGetEntries = 65 // IPT_SO_GET_ENTRIES, not in x/sys
	hookForward     = unix.NF_INET_FORWARD
	// struct ipt_getinfo: name[32], valid_hooks, hook_entry[5],
	// underflow[5], num_entries, size.
	getinfoLen = 32 + 4 + 5*4 + 5*4 + 4 + 4
	// struct ipt_get_entries: name[32], size, then the entries, 8-aligned.
	getEntriesHdr = 40
	// In struct ipt_entry: target_offset at 88; the target (struct
	// xt_entry_target, 32 bytes) then the standard target's verdict.
	targetOffsetAt = 88
	targetHdr      = 32
	verdictDrop    = -1 // -NF_DROP - 1
)

func legacyPolicyDrop() (bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return false, fmt.Errorf("legacy iptables: %w", err)
	}
	defer unix.Close(fd)
	info := make([]byte, getinfoLen)
	copy(info, "filter")
	if err := getsockopt(fd, iptSoGetInfo, info); err != nil {
		return false, fmt.Errorf("legacy iptables: get info: %w", err)
	}
	le := binary.NativeEndian
	if le.Uint32(info[32:])&(1<<hookForward) == 0 {
		return false, nil
	}
	underflow := le.Uint32(info[32+4+5*4+hookForward*4:])
	size := le.Uint32(info[getinfoLen-4:])
	entries := make([]byte, getEntriesHdr+int(size))
	copy(entries, "filter")
	le.PutUint32(entries[32:], size)
	if err := getsockopt(fd, iptSoGetEntries, entries); err != nil {
		return false, fmt.Errorf("legacy iptables: get entries: %w", err)
	}
	e := entries[getEntriesHdr:]
	if int(underflow)+targetOffsetAt+2 > len(e) {
		return false, errors.New("legacy iptables: policy entry out of range")
	}
	t := int(underflow) + int(le.Uint16(e[int(underflow)+targetOffsetAt:]))
	if t+targetHdr+4 > len(e) {
		return false, errors.New("legacy iptables: policy target out of range")
	}
	return int32(le.Uint32(e[t+targetHdr:])) == verdictDrop, nil
}

func getsockopt(fd, opt int, buf []byte) error {
	n := uint32(len(buf))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_IP, uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}
