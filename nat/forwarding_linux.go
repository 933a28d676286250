package nat

// Forwarding, per interface and family. IPv4's is a devconf entry that
// netlink sets by interface index (nl.SetForwarding). IPv6 has no
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

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// confPath is the sysctl file of setting name for interface dev ("all",
// "default" or a link's name) in family fam.
func confPath(fam byte, dev, name string) string {
	if fam == unix.NFPROTO_IPV6 {
		return "/proc/sys/net/ipv6/conf/" + dev + "/" + name
	}
	return "/proc/sys/net/ipv4/conf/" + dev + "/" + name
}

// readSysctl reads a /proc/sys file of host's network namespace (which
// /proc/sys/net follows: the reading thread's).
func readSysctl(host *netns.Handle, path string) (string, error) {
	var b []byte
	err := host.Do(func() (err error) {
		b, err = os.ReadFile(path)
		return err
	})
	return strings.TrimSpace(string(b)), err
}

// writeSysctl writes a /proc/sys file of host's network namespace.
func writeSysctl(host *netns.Handle, path, v string) error {
	return host.Do(func() error { return os.WriteFile(path, []byte(v+"\n"), 0) })
}

// linkName is the name of the link index now.
func linkName(hc *nl.Conn, index int) (string, error) {
	msgs, err := hc.Query(nl.GetLinkByIndex(index))
	if err != nil {
		return "", err
	}
	l, err := nl.DecodeLink(msgs[0].Data)
	if err != nil {
		return "", err
	}
	return l.Attributes.Name, nil
}

// uplinkForwarding reports whether the uplink forwards family k.fam now:
// for IPv4 its own forwarding setting, for IPv6 the global switch or its
// force_forwarding.
func uplinkForwarding(host *netns.Handle, hc *nl.Conn, k upKey) (bool, error) {
	if k.fam == unix.NFPROTO_IPV4 {
		msgs, err := hc.Query(nl.GetLinkByIndex(k.index))
		if err != nil {
			return false, err
		}
		on, _ := nl.Forwarding(msgs[0].Data)
		return on, nil
	}
	if forwardsAll(host, unix.NFPROTO_IPV6) {
		return true, nil
	}
	name, err := linkName(hc, k.index)
	if err != nil {
		return false, err
	}
	v, err := readSysctl(host, confPath(unix.NFPROTO_IPV6, name, "force_forwarding"))
	if errors.Is(err, os.ErrNotExist) {
		return false, noIPv6Forwarding(err)
	}
	return v == "1", err
}

// setUplinkForwarding turns the uplink's forwarding of family k.fam on or
// off (for IPv6 its force_forwarding, by name, checked against its index
// afterwards: a rename in between is undone and reported).
func setUplinkForwarding(host *netns.Handle, hc *nl.Conn, k upKey, on bool) error {
	if k.fam == unix.NFPROTO_IPV4 {
		return hc.Exec(nl.SetForwarding(k.index, on))
	}
	name, err := linkName(hc, k.index)
	if err != nil {
		return err
	}
	if err := setForceForwarding(host, name, on); err != nil {
		return err
	}
	if now, err := linkName(hc, k.index); err != nil || now != name {
		setForceForwarding(host, name, !on) // (whichever link has the name now)
		return fmt.Errorf("uplink %s renamed while its IPv6 forwarding was set: %w", name, errors.Join(err, nl.ErrInterrupted))
	}
	return nil
}

// setForceForwarding sets net.ipv6.conf.LINK.force_forwarding.
func setForceForwarding(host *netns.Handle, link string, on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	err := writeSysctl(host, confPath(unix.NFPROTO_IPV6, link, "force_forwarding"), v)
	if errors.Is(err, os.ErrNotExist) {
		if _, lerr := readSysctl(host, confPath(unix.NFPROTO_IPV6, link, "forwarding")); lerr == nil {
			return noIPv6Forwarding(err) // the link is there, the setting is not
		}
	}
	if errors.Is(err, unix.EROFS) || errors.Is(err, os.ErrPermission) {
		return noIPv6Forwarding(err)
	}
	return err
}

func noIPv6Forwarding(err error) error {
	return fmt.Errorf("%w: IPv6 is forwarded per interface with net.ipv6.conf.IF.force_forwarding (Linux 6.17 and later, "+
		"under a writable /proc/sys); nsnet never turns on the global net.ipv6.conf.all.forwarding: %w", ErrNoIPv6Forwarding, err)
}
