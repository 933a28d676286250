package nl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"
)

func ack(req netlink.Message) netlink.Message {
	b := make([]byte, 4+16)
	return netlink.Message{Header: netlink.Header{Type: netlink.Error, Sequence: req.Header.Sequence, PID: req.Header.PID}, Data: b}
}

// TestDoPairsRepliesWithRequests: one batch, an acknowledgement per
// request, a reply in the middle: each reply lands with its request, and
// every request was sent with NLM_F_ACK.
func TestDoPairsRepliesWithRequests(t *testing.T) {
	linkMsg, _ := (&rtnetlink.LinkMessage{Index: 7, Attributes: &rtnetlink.LinkAttributes{Name: "eth0"}}).MarshalBinary()
	c := &Conn{c: nltest.Dial(func(reqs []netlink.Message) ([]netlink.Message, error) {
		if len(reqs) != 3 {
			t.Fatalf("%d requests in the batch, want 3", len(reqs))
		}
		for _, r := range reqs {
			if r.Header.Flags&netlink.Acknowledge == 0 {
				t.Errorf("request %v without NLM_F_ACK", r.Header.Type)
			}
		}
		return []netlink.Message{
			ack(reqs[0]),
			{Header: netlink.Header{Type: unix.RTM_NEWLINK, Sequence: reqs[1].Header.Sequence}, Data: linkMsg},
			ack(reqs[1]), ack(reqs[2]),
		}, nil
	})}
	replies, errs, err := c.Do(SetLinkUp(0, "lo", true), GetLinkByName("eth0"), SetForwarding(7, true))
	if err != nil || errors.Join(errs...) != nil {
		t.Fatal(err, errs)
	}
	if len(replies[0]) != 0 || len(replies[1]) != 1 || len(replies[2]) != 0 {
		t.Fatalf("replies per request: %d %d %d", len(replies[0]), len(replies[1]), len(replies[2]))
	}
	l, err := DecodeLink(replies[1][0].Data)
	if err != nil || l.Index != 7 || l.Attributes.Name != "eth0" || l.PeerNetNSID != -1 {
		t.Errorf("decoded %+v, %v", l, err)
	}
}

// TestErrorMapping: the kernel's ENODEV, ESRCH and EADDRNOTAVAIL match
// os.ErrNotExist; EEXIST os.ErrExist; the errno stays reachable.
func TestErrorMapping(t *testing.T) {
	for _, c := range []struct {
		errno unix.Errno
		want  error
	}{{unix.ENODEV, os.ErrNotExist}, {unix.ESRCH, os.ErrNotExist}, {unix.EADDRNOTAVAIL, os.ErrNotExist}, {unix.EEXIST, os.ErrExist}, {unix.EPERM, os.ErrPermission}} {
		conn := &Conn{c: nltest.Dial(func(reqs []netlink.Message) ([]netlink.Message, error) {
			return nltest.Error(int(c.errno), reqs)
		})}
		err := conn.Exec(DeleteLink(0, "nope"))
		if !errors.Is(err, c.want) || !errors.Is(err, c.errno) {
			t.Errorf("%v: got %v, want errors.Is %v", c.errno, err, c.want)
		}
	}
}

func TestDumpMustBeLast(t *testing.T) {
	c := &Conn{c: nltest.Dial(func([]netlink.Message) ([]netlink.Message, error) { return nil, nil })}
	if _, _, err := c.Do(DumpLinks(), SetLinkUp(1, "", true)); err == nil {
		t.Error("a dump before another request was accepted")
	}
}

// TestSetForwardingBytes pins the devconf message byte for byte: ifinfomsg
// for index 7, then IFLA_AF_SPEC { AF_INET { IFLA_INET_CONF {
// IPV4_DEVCONF_FORWARDING: 1 } } } — the layout of the kernel's
// inet_validate_link_af/inet_set_link_af (net/ipv4/devinet.c), the three
// nests flagged NLA_F_NESTED as strict validation prefers.
func TestSetForwardingBytes(t *testing.T) {
	r := SetForwarding(7, true)
	var want []byte
	want = append(want, 0, 0, 0, 0)                  // family, pad, type
	want = binary.NativeEndian.AppendUint32(want, 7) // index
	want = append(want, make([]byte, 8)...)          // flags, change
	nla := func(typ uint16, payload []byte) []byte {
		b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(payload)))
		b = binary.NativeEndian.AppendUint16(b, typ)
		return append(b, payload...)
	}
	conf := nla(1, binary.NativeEndian.AppendUint32(nil, 1))
	const nested = unix.NLA_F_NESTED
	want = append(want, nla(unix.IFLA_AF_SPEC|nested, nla(unix.AF_INET|nested, nla(1|nested, conf)))...)
	if r.Type != unix.RTM_SETLINK || !bytes.Equal(r.Data, want) {
		t.Errorf("SetForwarding(7, true) = %d %x\nwant %d %x", r.Type, r.Data, unix.RTM_SETLINK, want)
	}
}

// TestNoLinkLocalBytes pins the address generation message: ifinfomsg for
// index 9, then IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE: u8 1 } }
// (inet6_set_link_af, net/ipv6/addrconf.c), the u8 padded to 4 bytes.
func TestNoLinkLocalBytes(t *testing.T) {
	r := NoLinkLocal(9)
	var want []byte
	want = append(want, 0, 0, 0, 0)
	want = binary.NativeEndian.AppendUint32(want, 9)
	want = append(want, make([]byte, 8)...)
	nla := func(typ uint16, payload []byte) []byte {
		b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(payload)))
		b = binary.NativeEndian.AppendUint16(b, typ)
		b = append(b, payload...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	const nested = unix.NLA_F_NESTED
	mode := nla(8, []byte{1}) // length 5, then 3 bytes of padding
	want = append(want, nla(unix.IFLA_AF_SPEC|nested, nla(unix.AF_INET6|nested, mode))...)
	if r.Type != unix.RTM_SETLINK || !bytes.Equal(r.Data, want) {
		t.Errorf("NoLinkLocal(9) = %d %x\nwant %d %x", r.Type, r.Data, unix.RTM_SETLINK, want)
	}
}

func TestForwardingDecode(t *testing.T) {
	// A link message with IFLA_AF_SPEC/AF_INET/IFLA_INET_CONF as the kernel
	// dumps it: an array of u32, forwarding first.
	conf := make([]byte, 4*8)
	binary.NativeEndian.PutUint32(conf, 1)
	ae := netlink.NewAttributeEncoder()
	ae.Nested(unix.IFLA_AF_SPEC, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(unix.AF_INET, func(ae *netlink.AttributeEncoder) error {
			ae.Bytes(1, conf)
			return nil
		})
		return nil
	})
	attrs, _ := ae.Encode()
	msg := append(make([]byte, unix.SizeofIfInfomsg), attrs...)
	if on, ok := Forwarding(msg); !on || !ok {
		t.Errorf("Forwarding = %v, %v; want true, true", on, ok)
	}
	if _, ok := Forwarding(make([]byte, unix.SizeofIfInfomsg)); ok {
		t.Error("no devconf reported as present")
	}
}

func TestBroadcast(t *testing.T) {
	for p, want := range map[string]string{"10.0.0.1/24": "10.0.0.255", "192.0.2.5/30": "192.0.2.7", "192.0.2.5/31": "invalid IP", "10.0.0.1/8": "10.255.255.255", "fd00::1/64": "invalid IP"} {
		if got := Broadcast(netip.MustParsePrefix(p)).String(); got != want {
			t.Errorf("Broadcast(%s) = %s, want %s", p, got, want)
		}
	}
}

func TestCheckIfName(t *testing.T) {
	for name, ok := range map[string]bool{"eth0": true, "a": true, "fifteen-bytes-x": true, "": false, "sixteen-bytes-xx": false,
		".": false, "..": false, "a/b": false, "a:b": false, "a b": false, "a\x00": false, "a\tb": false,
		"hv%d": false, "a\xa0": false, "a\u00a0b": false, "a\nb": false, "a\x7f": false, "é0": true} {
		if err := CheckIfName(name); (err == nil) != ok || (err != nil && !errors.Is(err, ErrInvalidName)) {
			t.Errorf("CheckIfName(%q) = %v", name, err)
		}
	}
}
