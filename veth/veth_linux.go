package veth

import (
	"fmt"
	"runtime"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
)

// sysCreate is Create on Linux.
func sysCreate(ns *netns.Handle, c Config) error {
	if err := c.validate(); err != nil {
		return fmt.Errorf("veth: create %q: %w", c.Name, err)
	}
	if c.Name == c.PeerName && c.PeerNS != nil && c.PeerNS.Equal(ns) {
		return fmt.Errorf("veth: create %q: %w: both ends are called %q in one namespace (PeerNS is ns)", c.Name, ErrInvalidConfig, c.Name)
	}
	peerFd := -1
	if c.PeerNS != nil {
		fd, err := nl.NSFd(c.PeerNS)
		if err != nil {
			return fmt.Errorf("veth: create %q: peer namespace: %w", c.Name, err)
		}
		peerFd = fd
	}
	conn, err := nl.Dial(ns)
	if err != nil {
		return fmt.Errorf("veth: create %q: %w", c.Name, err)
	}
	defer conn.Close()
	err = conn.Exec(nl.NewVeth(nl.Veth{
		Name: c.Name, PeerName: c.PeerName, PeerNSFd: peerFd, MTU: c.MTU,
		HardwareAddr: c.HardwareAddr, PeerHardwareAddr: c.PeerHardwareAddr, Up: c.Up,
	}))
	runtime.KeepAlive(c.PeerNS) // peerFd was in use until here
	if err != nil {
		return fmt.Errorf("veth: create %q peer %q: %w", c.Name, c.PeerName, err)
	}
	if !c.Up {
		return nil
	}
	peerConn := conn
	if c.PeerNS != nil {
		if peerConn, err = nl.Dial(c.PeerNS); err == nil {
			defer peerConn.Close()
		}
	}
	if err == nil {
		err = peerConn.Exec(nl.SetLinkUp(0, c.PeerName, true))
	}
	if err != nil {
		// Undo: a half-configured pair is not what was asked for.
		conn.Exec(nl.DeleteLink(0, c.Name))
		return fmt.Errorf("veth: create %q: set peer %q up: %w", c.Name, c.PeerName, err)
	}
	return nil
}
