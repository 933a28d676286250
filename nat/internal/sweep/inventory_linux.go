package sweep

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/nat/internal/table"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/veth"
)

// Entry is a link of any owner as the host's table records it, with what
// the host's links say of its host end (nat.LinkInfo is made from it).
type Entry struct {
	Index    int        // the host end's interface index
	HostVeth string     // its name now; "" if it is gone
	Mark     owner.Mark // from its links entry: owner, pid, name at Connect, tag
	Alive    bool       // the owner runs (always, for persistent links)
	Uplink   string     // the uplink's name now ("" if gone)
	Families []byte     // forwarded: nftables.TableFamilyIPv4/IPv6
	Prefix   netip.Prefix
	Prefix6  netip.Prefix
	Ports    []Port
	PeerNS   string // the peer's namespace: its name under /run/netns, or "nsid N"
}

// Port is a published port of an Entry.
type Port struct {
	nftset.PortMap
	NSAddr netip.Addr
}

// Inventory lists every link the table of host records, of every owner,
// live or dead, ordered by interface index: what nsnet ls shows. A host
// without the table has none; a foreign table is nftset.ErrForeignTable.
func Inventory(host *netns.Handle) ([]Entry, error) {
	c, err := table.NFTConn(host)
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	if err := nftset.OwnTable(c); err != nil {
		if nftset.IsENOENT(err) {
			return nil, nil
		}
		return nil, err
	}
	sets := map[string][]nftables.SetElement{}
	for _, set := range []string{nftset.SetLinks, nftset.SetEgress, nftset.SetClaims, nftset.SetClaims6,
		nftset.SetPorts, nftset.SetPortLinks, nftset.SetPorts6, nftset.SetPortLinks6} {
		if sets[set], err = c.GetSetElements(nftset.ByName[set]); err != nil && !nftset.IsENOENT(err) {
			return nil, fmt.Errorf("set %s: %w", set, err)
		}
	}
	byIndex := map[int]*Entry{}
	var order []int
	for _, x := range sets[nftset.SetLinks] {
		m, ok := owner.Parse(x.Comment)
		if !ok || len(x.Key) != 4 {
			continue
		}
		i := int(binary.NativeEndian.Uint32(x.Key))
		byIndex[i] = &Entry{Index: i, Mark: m}
		order = append(order, i)
	}
	uplinkOf := map[int]int{}
	for _, x := range sets[nftset.SetEgress] {
		if len(x.Key) < 12 {
			continue
		}
		if e := byIndex[int(binary.NativeEndian.Uint32(x.Key))]; e != nil {
			uplinkOf[e.Index] = int(binary.NativeEndian.Uint32(x.Key[4:8]))
			e.Families = append(e.Families, x.Key[8])
		}
	}
	for _, set := range []string{nftset.SetClaims, nftset.SetClaims6} {
		for _, x := range sets[set] {
			p, ok := nftset.ClaimPrefix(x.Key)
			if !ok || len(x.Val) != 4 {
				continue
			}
			if e := byIndex[int(binary.NativeEndian.Uint32(x.Val))]; e != nil {
				if p.Addr().Is4() {
					e.Prefix = p
				} else {
					e.Prefix6 = p
				}
			}
		}
	}
	readPorts(byIndex, sets[nftset.SetPorts], sets[nftset.SetPortLinks], 4)
	readPorts(byIndex, sets[nftset.SetPorts6], sets[nftset.SetPortLinks6], 16)
	if err := describe(host, byIndex, uplinkOf); err != nil {
		return nil, err
	}
	slices.Sort(order)
	out := make([]Entry, 0, len(order))
	for _, i := range order {
		out = append(out, *byIndex[i])
	}
	return out, nil
}

// readPorts gives each entry its published ports of one family (addresses
// of n bytes): port_links names the link, ports the namespace's end.
func readPorts(byIndex map[int]*Entry, ports, links []nftables.SetElement, n int) {
	target := map[string][]byte{}
	for _, x := range ports {
		target[string(x.Key)] = x.Val
	}
	for _, x := range links {
		if len(x.Key) != n+8 || len(x.Val) != 4 {
			continue
		}
		e := byIndex[int(binary.NativeEndian.Uint32(x.Val))]
		if e == nil {
			continue
		}
		a, _ := netip.AddrFromSlice(x.Key[:n])
		p := Port{PortMap: nftset.PortMap{Addr: a, Proto: x.Key[n], Port: binary.BigEndian.Uint16(x.Key[n+4:])}}
		if t := target[string(x.Key)]; len(t) >= n+2 {
			p.NSAddr, _ = netip.AddrFromSlice(t[:n])
			p.NSPort = binary.BigEndian.Uint16(t[n:])
		}
		e.Ports = append(e.Ports, p)
	}
}

// describe fills in what the host's links say (names now, the peer's
// namespace) and whether each owner runs.
func describe(host *netns.Handle, byIndex map[int]*Entry, uplinkOf map[int]int) error {
	links, err := veth.List(host)
	if err != nil {
		return err
	}
	name := map[int]string{}
	for _, l := range links {
		name[l.Index] = l.Name
		if e := byIndex[l.Index]; e != nil {
			e.HostVeth = l.Name
			switch {
			case l.PeerNetNSName != "":
				e.PeerNS = l.PeerNetNSName
			case l.PeerNetNSID >= 0:
				e.PeerNS = fmt.Sprintf("nsid %d", l.PeerNetNSID)
			}
		}
	}
	var ids []string
	for i, e := range byIndex {
		e.Uplink = name[uplinkOf[i]]
		ids = append(ids, e.Mark.ID)
	}
	live, err := owner.Live(host, ids)
	if err != nil {
		return fmt.Errorf("owners: %w", err)
	}
	for _, e := range byIndex {
		e.Alive = live[e.Mark.ID]
	}
	return nil
}
