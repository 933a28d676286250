package nl

// Forwarding, per interface and family. IPv4's is a devconf entry that
// netlink sets by interface index (SetForwarding). IPv6 has no
// per-interface forwarding that netlink can set: net.ipv6.conf.IF.forwarding
// makes the interface a router for neighbour discovery and router
// advertisements but forwards nothing, and the global
// net.ipv6.conf.all.forwarding, which does, would make every interface of
// the host a router (and stop it accepting router advertisements, losing
// its SLAAC default route). Linux 6.17 added force_forwarding, which
// forwards IPv6 between the interfaces that have it on and changes
// nothing else; it is only under /proc/sys, which takes names, so a write
// to the uplink's is checked against the uplink's index afterwards.

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// ForceForwarding is the name of IPv6's per-interface forwarding setting.
// Tests set another name to run as on a kernel before 6.17, which lacks it.
var ForceForwarding = "force_forwarding"

// HasForceForwarding reports whether host's kernel forwards IPv6 per
// interface (net.ipv6.conf.IF.force_forwarding, Linux 6.17 and later).
func HasForceForwarding(host *netns.Handle) bool {
	_, err := ReadSysctl(host, ConfPath(unix.NFPROTO_IPV6, "all", ForceForwarding))
	return err == nil
}

// ConfPath is the sysctl file of setting name for interface dev ("all",
// "default" or a link's name) in family fam.
func ConfPath(fam byte, dev, name string) string {
	if fam == unix.NFPROTO_IPV6 {
		return "/proc/sys/net/ipv6/conf/" + dev + "/" + name
	}
	return "/proc/sys/net/ipv4/conf/" + dev + "/" + name
}

// ReadSysctl reads a /proc/sys file of host's network namespace (which
// /proc/sys/net follows: the reading thread's).
func ReadSysctl(host *netns.Handle, path string) (string, error) {
	var b []byte
	err := Do(host, func() (err error) {
		b, err = os.ReadFile(path)
		return err
	})
	return strings.TrimSpace(string(b)), err
}

// WriteSysctl writes a /proc/sys file of host's network namespace.
func WriteSysctl(host *netns.Handle, path, v string) error {
	return Do(host, func() error { return os.WriteFile(path, []byte(v+"\n"), 0) })
}

// LinkName is the name of the link index now.
func LinkName(hc *Conn, index int) (string, error) {
	msgs, err := hc.Query(GetLinkByIndex(index))
	if err != nil {
		return "", err
	}
	l, err := DecodeLink(msgs[0].Data)
	if err != nil {
		return "", err
	}
	return l.Attributes.Name, nil
}

// LinkForwards reports whether the link index of host (hc is a socket
// there) forwards family fam (unix.NFPROTO_IPV4 or _IPV6) now: for IPv4
// its own forwarding setting, for IPv6 the global switch or its
// force_forwarding.
func LinkForwards(host *netns.Handle, hc *Conn, index int, fam byte) (bool, error) {
	if fam == unix.NFPROTO_IPV4 {
		msgs, err := hc.Query(GetLinkByIndex(index))
		if err != nil {
			return false, err
		}
		on, _ := Forwarding(msgs[0].Data)
		return on, nil
	}
	if ForwardsAll(host, unix.NFPROTO_IPV6) {
		return true, nil
	}
	name, err := LinkName(hc, index)
	if err != nil {
		return false, err
	}
	v, err := ReadSysctl(host, ConfPath(unix.NFPROTO_IPV6, name, ForceForwarding))
	if errors.Is(err, os.ErrNotExist) {
		return false, noForceForwarding(err)
	}
	return v == "1", err
}

// SetLinkForwarding turns the forwarding of family fam of the link index
// on or off (for IPv6 its force_forwarding, by name, checked against its
// index afterwards: a rename in between is undone and reported).
func SetLinkForwarding(host *netns.Handle, hc *Conn, index int, fam byte, on bool) error {
	if fam == unix.NFPROTO_IPV4 {
		return hc.Exec(SetForwarding(index, on))
	}
	name, err := LinkName(hc, index)
	if err != nil {
		return err
	}
	if err := SetForceForwarding(host, name, on); err != nil {
		return err
	}
	if now, err := LinkName(hc, index); err != nil || now != name {
		SetForceForwarding(host, name, !on) // (whichever link has the name now)
		return fmt.Errorf("link %s renamed while its IPv6 forwarding was set: %w", name, errors.Join(err, ErrInterrupted))
	}
	return nil
}

// SetForceForwarding sets net.ipv6.conf.LINK.force_forwarding.
func SetForceForwarding(host *netns.Handle, link string, on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	err := WriteSysctl(host, ConfPath(unix.NFPROTO_IPV6, link, ForceForwarding), v)
	if errors.Is(err, os.ErrNotExist) {
		if _, lerr := ReadSysctl(host, ConfPath(unix.NFPROTO_IPV6, link, "forwarding")); lerr == nil {
			return noForceForwarding(err) // the link is there, the setting is not
		}
	}
	if errors.Is(err, unix.EROFS) || errors.Is(err, os.ErrPermission) {
		return noForceForwarding(err)
	}
	return err
}

func noForceForwarding(err error) error {
	return fmt.Errorf("%w: IPv6 is forwarded per interface with net.ipv6.conf.IF.force_forwarding (Linux 6.17 and later, "+
		"under a writable /proc/sys); nsnet never turns on the global net.ipv6.conf.all.forwarding: %w", ErrNoForceForwarding, err)
}

// ForwardsAll reports whether forwarding of family fam is on for every
// interface of host (net.ipv4.conf.all.forwarding, which
// net.ipv4.ip_forward sets, or net.ipv6.conf.all.forwarding): the user's
// choice, which nsnet leaves alone.
func ForwardsAll(host *netns.Handle, fam byte) bool {
	v, _ := ReadSysctl(host, ConfPath(fam, "all", "forwarding"))
	return v == "1"
}
