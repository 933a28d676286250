package veth

import (
	"fmt"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
)

func sysCreateBridge(ns *netns.Handle, name string) error {
	return exec(ns, "create bridge", name, nl.NewLink(&rtnetlink.LinkMessage{Attributes: &rtnetlink.LinkAttributes{
		Name: name,
		Info: &rtnetlink.LinkInfo{Kind: "bridge"},
	}}))
}

func sysSetMaster(ns *netns.Handle, name, master string) error {
	if err := checkName("set master", name); err != nil {
		return err
	}
	c, err := nl.Dial(ns)
	if err != nil {
		return fmt.Errorf("veth: set master of %q: %w", name, err)
	}
	defer c.Close()
	index := uint32(0) // nomaster
	if master != "" {
		if err := checkName("set master", master); err != nil {
			return err
		}
		i, err := c.LinkIndex(master)
		if err != nil {
			return fmt.Errorf("veth: set master of %q: bridge %q: %w", name, master, err)
		}
		index = uint32(i)
	}
	if err := c.Exec(nl.SetLink(&rtnetlink.LinkMessage{Attributes: &rtnetlink.LinkAttributes{Name: name, Master: &index}})); err != nil {
		return fmt.Errorf("veth: set master of %q to %q: %w", name, master, err)
	}
	return nil
}
