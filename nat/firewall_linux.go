package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
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
// state.

// foreignDrop returns the first of those it finds, as "ip filter FORWARD
// (policy drop)", or "".
func foreignDrop(c *nftables.Conn) (string, error) {
	chains, err := c.ListChains()
	if err != nil {
		return "", fmt.Errorf("list nftables chains: %w", err)
	}
	for _, ch := range chains {
		fam := ch.Table.Family
		if (fam == nftables.TableFamilyIPv4 && ch.Table.Name == TableName) ||
			(fam != nftables.TableFamilyIPv4 && fam != nftables.TableFamilyINet) ||
			ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward {
			continue
		}
		family := "ip"
		if fam == nftables.TableFamilyINet {
			family = "inet"
		}
		name := fmt.Sprintf("%s %s %s", family, ch.Table.Name, ch.Name)
		if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
			return name + " (policy drop)", nil
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return "", fmt.Errorf("list rules of %s: %w", name, err)
		}
		if len(rules) > 0 && dropsAll(rules[len(rules)-1]) {
			return name + " (its last rule drops or rejects everything)", nil
		}
	}
	return "", nil
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

// legacyForwardDropHere reports whether the legacy iptables filter table
// of the calling thread's namespace exists and its FORWARD chain's policy
// is DROP.
func legacyForwardDropHere() (bool, error) {
	// thread-self: /proc/net is the main thread's namespace, not this one's.
	names, err := os.ReadFile("/proc/thread-self/net/ip_tables_names")
	if err != nil || !strings.Contains("\n"+string(names), "\nfilter\n") {
		return false, nil // no legacy filter table here (or no x_tables at all)
	}
	return legacyPolicyDrop()
}

// x_tables' getsockopt interface (linux/netfilter_ipv4/ip_tables.h).
const (
	iptSoGetInfo    = 64 // IPT_SO_GET_INFO
	iptSoGetEntries = 65 // IPT_SO_GET_ENTRIES
	hookForward     = 2  // NF_INET_FORWARD
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
