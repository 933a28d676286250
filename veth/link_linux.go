package veth

import (
	"fmt"
	"runtime"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
)

func fromNL(m nl.Link) Link {
	a := m.Attributes
	l := Link{
		Index:        int(m.Index),
		Name:         a.Name,
		MTU:          int(a.MTU),
		Flags:        Flags(m.Flags),
		OperState:    operState(a.OperationalState),
		HardwareAddr: a.Address,
		Broadcast:    a.Broadcast,
		LinkType:     m.Type,
		PeerIndex:    int(a.Type),
		PeerNetNSID:  m.PeerNetNSID,
	}
	if a.Info != nil {
		l.Kind = a.Info.Kind
	}
	if a.Master != nil {
		l.MasterIndex = int(*a.Master)
	}
	if a.Alias != nil {
		l.Alias = *a.Alias
	}
	l.Qdisc = a.QueueDisc
	if a.LinkMode != nil {
		l.LinkMode = *a.LinkMode
	}
	if a.NetDevGroup != nil {
		l.Group = *a.NetDevGroup
	}
	if a.TxQueueLen != nil {
		l.TxQueueLen = int(*a.TxQueueLen)
	}
	return l
}

// nameNetNSs fills in the names of the named namespaces (see netns.List)
// that links' peers are in, asking c's namespace for the id it gives each
// until every id in links is named.
func nameNetNSs(c *nl.Conn, links []Link) {
	want := map[int]string{}
	for _, l := range links {
		if l.PeerNetNSID >= 0 {
			want[l.PeerNetNSID] = ""
		}
	}
	if len(want) == 0 {
		return
	}
	names, _ := netns.List()
	for left := len(want); left > 0 && len(names) > 0; names = names[1:] {
		h, err := netns.Open(names[0])
		if err != nil {
			continue
		}
		msgs, err := c.Query(nl.GetNSID(h.Fd()))
		h.Close()
		if err != nil || len(msgs) == 0 {
			continue
		}
		if id, err := nl.DecodeNSID(msgs[0].Data); err == nil {
			if name, ok := want[id]; ok && name == "" {
				want[id] = names[0]
				left--
			}
		}
	}
	for i := range links {
		if links[i].PeerNetNSID >= 0 {
			links[i].PeerNetNSName = want[links[i].PeerNetNSID]
		}
	}
}

// nameOthers fills in l's peer (when in the same namespace) and master
// from others, the namespace's links by index.
func nameOthers(l *Link, others func(index int) (Link, bool)) {
	if l.PeerIndex != 0 && l.PeerNetNSID < 0 {
		if p, ok := others(l.PeerIndex); ok {
			l.PeerName, l.PeerFlags = p.Name, p.Flags
		}
	}
	if l.MasterIndex != 0 {
		if m, ok := others(l.MasterIndex); ok {
			l.MasterName = m.Name
		}
	}
}

func operState(s rtnetlink.OperationalState) string {
	switch s {
	case rtnetlink.OperStateNotPresent:
		return "NOTPRESENT"
	case rtnetlink.OperStateDown:
		return "DOWN"
	case rtnetlink.OperStateLowerLayerDown:
		return "LOWERLAYERDOWN"
	case rtnetlink.OperStateTesting:
		return "TESTING"
	case rtnetlink.OperStateDormant:
		return "DORMANT"
	case rtnetlink.OperStateUp:
		return "UP"
	}
	return "UNKNOWN"
}

func checkName(op, name string) error {
	if err := nl.CheckIfName(name); err != nil {
		return fmt.Errorf("veth: %s: %w", op, err)
	}
	return nil
}

// sysList is List on Linux.
func sysList(ns *netns.Handle) ([]Link, error) {
	c, err := nl.Dial(ns)
	if err != nil {
		return nil, fmt.Errorf("veth: list: %w", err)
	}
	defer c.Close()
	msgs, err := c.Dump(nl.DumpLinks())
	if err != nil {
		return nil, fmt.Errorf("veth: list: %w", err)
	}
	links := make([]Link, 0, len(msgs))
	for _, m := range msgs {
		l, err := nl.DecodeLink(m.Data)
		if err != nil {
			return nil, fmt.Errorf("veth: list: %w", err)
		}
		links = append(links, fromNL(l))
	}
	byIndex := make(map[int]Link, len(links))
	for _, l := range links {
		byIndex[l.Index] = l
	}
	for i := range links {
		nameOthers(&links[i], func(index int) (Link, bool) {
			l, ok := byIndex[index]
			return l, ok
		})
	}
	nameNetNSs(c, links)
	return links, nil
}

// sysLookup is Lookup on Linux.
func sysLookup(ns *netns.Handle, name string) (Link, error) {
	if err := checkName("lookup", name); err != nil {
		return Link{}, err
	}
	c, err := nl.Dial(ns)
	if err != nil {
		return Link{}, fmt.Errorf("veth: lookup %q: %w", name, err)
	}
	defer c.Close()
	m, err := c.LinkByName(name)
	if err != nil {
		return Link{}, fmt.Errorf("veth: lookup %q: %w", name, err)
	}
	l := fromNL(m)
	nameOthers(&l, func(index int) (Link, bool) {
		msgs, err := c.Query(nl.GetLinkByIndex(index))
		if err != nil {
			return Link{}, false
		}
		o, err := nl.DecodeLink(msgs[0].Data)
		return fromNL(o), err == nil
	})
	one := []Link{l}
	nameNetNSs(c, one)
	return one[0], nil
}

// sysSetUp is SetUp on Linux.
func sysSetUp(ns *netns.Handle, name string) error { return setUp(ns, name, true) }

// sysSetDown is SetDown on Linux.
func sysSetDown(ns *netns.Handle, name string) error { return setUp(ns, name, false) }

func setUp(ns *netns.Handle, name string, up bool) error {
	op := "set up"
	if !up {
		op = "set down"
	}
	return exec(ns, op, name, nl.SetLinkUp(0, name, up))
}

// sysDelete is Delete on Linux.
func sysDelete(ns *netns.Handle, name string) error {
	return exec(ns, "delete", name, nl.DeleteLink(0, name))
}

// sysMove is Move on Linux.
func sysMove(ns *netns.Handle, name string, to *netns.Handle) error {
	if to == nil {
		return fmt.Errorf("veth: move %q: target namespace is nil: %w", name, ErrInvalidConfig)
	}
	fd, err := nl.NSFd(to)
	if err != nil {
		return fmt.Errorf("veth: move %q: %w", name, err)
	}
	err = exec(ns, "move", name, nl.SetLink(&rtnetlink.LinkMessage{Attributes: &rtnetlink.LinkAttributes{
		Name: name, NetNS: rtnetlink.NetNSForFD(uint32(fd)),
	}}))
	runtime.KeepAlive(to) // fd was in use until here
	return err
}

func exec(ns *netns.Handle, op, name string, r nl.Request) error {
	if err := checkName(op, name); err != nil {
		return err
	}
	c, err := nl.Dial(ns)
	if err != nil {
		return fmt.Errorf("veth: %s %q: %w", op, name, err)
	}
	defer c.Close()
	if err := c.Exec(r); err != nil {
		return fmt.Errorf("veth: %s %q: %w", op, name, err)
	}
	return nil
}
