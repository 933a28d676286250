package nl

import (
	"fmt"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// iflaLinkNetNSID is IFLA_LINK_NETNSID: for a veth, the id (in the
// namespace the message comes from) of the namespace holding its peer.
const iflaLinkNetNSID = 37

// Link is a decoded RTM_NEWLINK: rtnetlink's message plus the attributes it
// does not decode.
type Link struct {
	rtnetlink.LinkMessage
	PeerNetNSID int // -1 when absent (peer in the same namespace, or no peer)
}

// DecodeLink decodes an RTM_NEWLINK message body.
func DecodeLink(b []byte) (Link, error) {
	l := Link{PeerNetNSID: -1}
	if err := l.LinkMessage.UnmarshalBinary(b); err != nil {
		return l, err
	}
	if l.Attributes == nil {
		l.Attributes = &rtnetlink.LinkAttributes{}
	}
	if len(b) > unix.SizeofIfInfomsg {
		ad, err := netlink.NewAttributeDecoder(b[unix.SizeofIfInfomsg:])
		if err != nil {
			return l, err
		}
		for ad.Next() {
			if ad.Type() == iflaLinkNetNSID {
				l.PeerNetNSID = int(ad.Int32())
			}
		}
		if err := ad.Err(); err != nil {
			return l, err
		}
	}
	return l, nil
}

// skipStats asks the kernel to leave the (large) statistics out of link
// replies: nothing here reads them.
var skipStats = uint32(1 << 3) // RTEXT_FILTER_SKIP_STATS

// GetLinkByName is RTM_GETLINK for one name: the kernel looks the name up
// itself, one round trip and no dump. A missing link is ENODEV.
func GetLinkByName(name string) Request {
	return linkRequest(unix.RTM_GETLINK, 0, &rtnetlink.LinkMessage{
		Attributes: &rtnetlink.LinkAttributes{Name: name, ExtMask: &skipStats},
	})
}

// DumpLinks is RTM_GETLINK for every link of the namespace.
func DumpLinks() Request {
	return linkRequest(unix.RTM_GETLINK, netlink.Dump, &rtnetlink.LinkMessage{
		Attributes: &rtnetlink.LinkAttributes{ExtMask: &skipStats},
	})
}

// SetLinkUp changes IFF_UP of the link called name (index 0: the kernel
// resolves IFLA_IFNAME itself), or of index if name is "".
func SetLinkUp(index int, name string, up bool) Request {
	m := &rtnetlink.LinkMessage{Index: uint32(index), Change: unix.IFF_UP}
	if up {
		m.Flags = unix.IFF_UP
	}
	if name != "" {
		m.Attributes = &rtnetlink.LinkAttributes{Name: name}
	}
	return SetLink(m)
}

// DeleteLink is RTM_DELLINK by name, or by index if name is "".
func DeleteLink(index int, name string) Request {
	m := &rtnetlink.LinkMessage{Index: uint32(index)}
	if name != "" {
		m.Attributes = &rtnetlink.LinkAttributes{Name: name}
	}
	return linkRequest(unix.RTM_DELLINK, 0, m)
}

// NewLink is RTM_NEWLINK with NLM_F_CREATE|NLM_F_EXCL for m.
func NewLink(m *rtnetlink.LinkMessage) Request {
	return linkRequest(unix.RTM_NEWLINK, netlink.Create|netlink.Excl, m)
}

// SetLink is RTM_NEWLINK on an existing link, changing what m holds.
func SetLink(m *rtnetlink.LinkMessage) Request {
	return linkRequest(unix.RTM_NEWLINK, 0, m)
}

func linkRequest(typ uint16, flags netlink.HeaderFlags, m *rtnetlink.LinkMessage) Request {
	b, err := m.MarshalBinary()
	if err != nil {
		// LinkMessage only fails to marshal with a driver that cannot
		// encode; the requests built here have none or a veth, which
		// cannot fail.
		panic(fmt.Sprintf("nl: marshal link message: %v", err))
	}
	return Request{Type: typ, Flags: flags, Data: b}
}

// LinkByName looks a link up by name in c's namespace.
func (c *Conn) LinkByName(name string) (Link, error) {
	msgs, err := c.Query(GetLinkByName(name))
	if err != nil {
		return Link{}, err
	}
	if len(msgs) != 1 {
		return Link{}, fmt.Errorf("link %q: %d replies", name, len(msgs))
	}
	return DecodeLink(msgs[0].Data)
}

// LinkIndex returns the index of the link called name.
func (c *Conn) LinkIndex(name string) (int, error) {
	l, err := c.LinkByName(name)
	if err != nil {
		return 0, err
	}
	return int(l.Index), nil
}

// Veth describes a veth pair to create in one RTM_NEWLINK.
type Veth struct {
	Name, PeerName   string
	PeerNSFd         int // -1: the peer stays in the namespace of the socket
	MTU              int // 0: kernel default
	HardwareAddr     []byte
	PeerHardwareAddr []byte
	Up               bool // the first end comes up in the same request (see NewVeth)
	Master           int  // the first end's master (a bridge), by index (0: none)
	// Index and PeerIndex ask for these interface indexes (0: the kernel
	// picks). The kernel takes PeerIndex only together with Index. A taken
	// index fails the request with EBUSY.
	Index, PeerIndex int
}

// NewVeth is the RTM_NEWLINK that creates the pair with the peer made
// directly inside its namespace: veth_newlink reads the peer's own
// ifinfomsg and attributes (name, namespace, MTU, address, IFF_UP) from
// VETH_INFO_PEER, so no move (which would cost an RCU grace period and
// reset the link) is needed.
func NewVeth(v Veth) Request {
	peer := &rtnetlink.LinkMessage{Index: uint32(v.PeerIndex), Attributes: &rtnetlink.LinkAttributes{
		Name:    v.PeerName,
		MTU:     uint32(v.MTU),
		Address: v.PeerHardwareAddr,
	}}
	if v.PeerNSFd >= 0 {
		peer.Attributes.NetNS = rtnetlink.NetNSForFD(uint32(v.PeerNSFd))
	}
	m := &rtnetlink.LinkMessage{Index: uint32(v.Index), Attributes: &rtnetlink.LinkAttributes{
		Name:    v.Name,
		MTU:     uint32(v.MTU),
		Address: v.HardwareAddr,
		Info:    &rtnetlink.LinkInfo{Kind: "veth", Data: &vethData{peer}},
	}}
	if v.Master != 0 {
		master := uint32(v.Master)
		m.Attributes.Master = &master
	}
	// Only the first end can be created up: the kernel registers and
	// configures the peer before it links the two, so opening the peer then
	// fails with ENOTCONN (veth_open without a peer). Bring it up after.
	if v.Up {
		m.Flags, m.Change = unix.IFF_UP, unix.IFF_UP
	}
	return NewLink(m)
}

// vethData encodes VETH_INFO_PEER: an ifinfomsg and attributes of the peer.
// (rtnetlink/v2's driver.Veth does the same, but importing its driver
// package registers every driver's decoder globally.)
type vethData struct{ peer *rtnetlink.LinkMessage }

const vethInfoPeer = 1

func (v *vethData) New() rtnetlink.LinkDriver { return &vethData{} }
func (v *vethData) Kind() string              { return "veth" }
func (v *vethData) Decode(*netlink.AttributeDecoder) error {
	return nil
}
func (v *vethData) Encode(ae *netlink.AttributeEncoder) error {
	b, err := v.peer.MarshalBinary()
	if err != nil {
		return err
	}
	ae.Bytes(vethInfoPeer, b)
	return nil
}

// GetLinkByIndex is RTM_GETLINK for one index.
func GetLinkByIndex(index int) Request {
	return linkRequest(unix.RTM_GETLINK, 0, &rtnetlink.LinkMessage{
		Index: uint32(index), Attributes: &rtnetlink.LinkAttributes{ExtMask: &skipStats},
	})
}

// SetAlias sets the ifalias of link index (the kernel ignores
// IFLA_IFALIAS when creating a link).
func SetAlias(index int, alias string) Request {
	return SetLink(&rtnetlink.LinkMessage{Index: uint32(index), Attributes: &rtnetlink.LinkAttributes{Alias: &alias}})
}

// iflaGroup is the link's device group; rtnetlink/v2 decodes
// it but does not encode it.
const iflaGroup = unix.IFLA_GROUP

// SetGroup moves the link with the interface index into device group g.
func SetGroup(index int, g uint32) Request {
	return rawLinkRequest(unix.RTM_NEWLINK, index, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(iflaGroup, g)
	})
}

// DeleteGroup deletes every link of device group g in one request: the
// kernel unregisters them together and waits for one RCU grace period for
// all, instead of one per link.
func DeleteGroup(g uint32) Request {
	return rawLinkRequest(unix.RTM_DELLINK, 0, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(iflaGroup, g)
	})
}

// rawLinkRequest is a link message built by hand, for what rtnetlink/v2
// cannot encode: an ifinfomsg naming index (0: none, the attributes say
// which link) and the attributes fill writes.
func rawLinkRequest(typ uint16, index int, fill func(*netlink.AttributeEncoder)) Request {
	ae := netlink.NewAttributeEncoder()
	fill(ae)
	attrs, _ := ae.Encode() // strings, integers and their nests cannot fail
	b := make([]byte, unix.SizeofIfInfomsg, unix.SizeofIfInfomsg+len(attrs))
	NativeEndian.PutUint32(b[4:], uint32(index))
	return Request{Type: typ, Data: append(b, attrs...)}
}

// SetAliasByName sets the ifalias of the link called name. Only for a name
// that cannot belong to anyone else: in a batch after a failed create it
// would mark whatever link has that name.
func SetAliasByName(name, alias string) Request {
	return SetLink(&rtnetlink.LinkMessage{Attributes: &rtnetlink.LinkAttributes{Name: name, Alias: &alias}})
}

// RenameLink gives the link with the interface index the name name.
func RenameLink(index int, name string) Request {
	return SetLink(&rtnetlink.LinkMessage{Index: uint32(index), Attributes: &rtnetlink.LinkAttributes{Name: name}})
}

// GetNSID asks which id the connection's namespace gives the namespace of
// the file descriptor fd (RTM_GETNSID); see DecodeNSID. It only looks: no
// id is assigned.
func GetNSID(fd int) Request {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(unix.NETNSA_FD, uint32(fd))
	attrs, _ := ae.Encode()
	return Request{Type: unix.RTM_GETNSID, Data: append([]byte{unix.AF_UNSPEC, 0, 0, 0}, attrs...)}
}

// DecodeNSID reads the id of an RTM_NEWNSID reply: -1 if none is
// assigned.
func DecodeNSID(b []byte) (int, error) {
	if len(b) < 4 {
		return -1, fmt.Errorf("nsid reply of %d bytes", len(b))
	}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return -1, err
	}
	for ad.Next() {
		if ad.Type() == unix.NETNSA_NSID {
			return int(ad.Int32()), nil
		}
	}
	return -1, ad.Err()
}

// SetHairpin turns the bridge port's hairpin mode on (IFLA_BRPORT_MODE in
// IFLA_PROTINFO, to the PF_BRIDGE handler): the bridge may send a frame
// back out of the port it came in by, as a translated connection from a
// port to a published port of its own needs where br_netfilter bridges it.
func SetHairpin(index int) Request {
	r := rawLinkRequest(unix.RTM_SETLINK, index, func(ae *netlink.AttributeEncoder) {
		ae.Nested(unix.IFLA_PROTINFO, func(ae *netlink.AttributeEncoder) error {
			ae.Uint8(unix.IFLA_BRPORT_MODE, 1)
			return nil
		})
	})
	r.Data[0] = unix.AF_BRIDGE
	return r
}
