package nftset

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"

	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// Set entries are added and removed with nftables transactions built here
// rather than with google/nftables (which still builds the table, chains
// and rules, and reads sets back), because nsnet needs four things that
// library cannot send:
//
//   - NLM_F_EXCL on new entries: without it the kernel accepts an entry
//     that is already there, so two links would share one and the first
//     Close would remove the other's (a prefix claimed twice, one host end
//     given to two AddRules);
//   - NFT_MSG_DESTROYSETELEM (Linux 6.3): a delete that ignores entries
//     already gone (a flushed ruleset), where one missing entry makes a
//     plain delete fail the whole transaction;
//   - entries spread over several messages: google/nftables puts all of a
//     call's entries in one attribute, whose 16-bit length wraps past
//     64 KiB and silently drops the rest (683 of 2,001 entries in one
//     Sweep);
//   - NFNL_BATCH_GENID: a transaction that commits only if nothing else
//     committed since the generation it names (see Batch.Gen).
const (
	nftMsgDestroySetElem = 0x1e // NFT_MSG_DESTROYSETELEM, not in x/sys yet
	NFTType              = unix.NFNL_SUBSYS_NFTABLES << 8
	NfgenmsgLen          = 4 // family, version, res_id

	// perMessage and perBatch keep each message far below 64 KiB and each
	// transaction's bytes below the socket's send limit (EMSGSIZE past
	// ~200 KiB).
	perMessage = 64
	perBatch   = 64 << 10
)

// Elem is one set entry: its key, its data in a map, and the comment
// (owner mark) nft shows; end marks an interval's end.
type Elem struct {
	Set     string
	Key     []byte
	Data    []byte // the value of a map's entry
	End     bool
	Comment string
}

func nfgen(family uint8, resID uint16) []byte {
	b := make([]byte, NfgenmsgLen)
	b[0], b[1] = family, unix.NFNETLINK_V0
	binary.BigEndian.PutUint16(b[2:], resID)
	return b
}

// Batch is one nftables transaction.
type Batch struct {
	// Family and Table name the table whose sets the entries go to (zero:
	// the library's inet table).
	Family uint8
	Table  string
	msgs   []netlink.Message
	// Gen, when set, makes the kernel refuse the transaction (ERESTART) if
	// the ruleset's generation is no longer *Gen.
	Gen *uint32
}

// Add queues the entries of els; exclusive refuses (EEXIST) an entry that
// is there already or, in an interval set, overlaps one.
func (b *Batch) Add(els []Elem, exclusive bool) error {
	flags := netlink.Create
	if exclusive {
		flags |= netlink.Excl
	}
	return b.queue(unix.NFT_MSG_NEWSETELEM, flags, els)
}

// Del queues the removal of els; with destroy, entries already gone are
// no error.
func (b *Batch) Del(els []Elem, destroy bool) error {
	typ := uint16(unix.NFT_MSG_DELSETELEM)
	if destroy {
		typ = nftMsgDestroySetElem
	}
	return b.queue(typ, 0, els)
}

// queue appends one message per set and per perMessage entries.
func (b *Batch) queue(typ uint16, flags netlink.HeaderFlags, els []Elem) error {
	bySet := map[string][]Elem{}
	var order []string
	for _, e := range els {
		if bySet[e.Set] == nil {
			order = append(order, e.Set)
		}
		bySet[e.Set] = append(bySet[e.Set], e)
	}
	for _, set := range order {
		all := bySet[set]
		for lo := 0; lo < len(all); lo += perMessage {
			data, err := encodeElems(b.table(), set, all[lo:min(lo+perMessage, len(all))])
			if err != nil {
				return err
			}
			b.msgs = append(b.msgs, netlink.Message{
				Header: netlink.Header{Type: netlink.HeaderType(NFTType | typ), Flags: netlink.Request | netlink.Acknowledge | flags},
				Data:   append(nfgen(b.family(), 0), data...),
			})
		}
	}
	return nil
}

func (b *Batch) table() string {
	if b.Table == "" {
		return TableName
	}
	return b.Table
}

func (b *Batch) family() uint8 {
	if b.Family == 0 {
		return unix.NFPROTO_INET
	}
	return b.Family
}

func encodeElems(table, set string, els []Elem) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, table)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
	ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(list *netlink.AttributeEncoder) error {
		for _, e := range els {
			list.Nested(unix.NFTA_LIST_ELEM, func(item *netlink.AttributeEncoder) error {
				item.Nested(unix.NFTA_SET_ELEM_KEY, func(k *netlink.AttributeEncoder) error {
					k.Bytes(unix.NFTA_DATA_VALUE, e.Key)
					return nil
				})
				if e.Data != nil {
					item.Nested(unix.NFTA_SET_ELEM_DATA, func(d *netlink.AttributeEncoder) error {
						d.Bytes(unix.NFTA_DATA_VALUE, e.Data)
						return nil
					})
				}
				if e.End {
					item.Uint32(unix.NFTA_SET_ELEM_FLAGS, unix.NFT_SET_ELEM_INTERVAL_END)
				}
				if e.Comment != "" {
					item.Bytes(unix.NFTA_SET_ELEM_USERDATA, userdata.AppendString(nil, userdata.TypeComment, e.Comment))
				}
				return nil
			})
		}
		return nil
	})
	return ae.Encode()
}

// DelTable queues the deletion of the library's table.
func (b *Batch) DelTable() error {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_TABLE_NAME, b.table())
	data, err := ae.Encode()
	if err != nil {
		return err
	}
	b.msgs = append(b.msgs, netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(NFTType | unix.NFT_MSG_DELTABLE), Flags: netlink.Request | netlink.Acknowledge},
		Data:   append(nfgen(b.family(), 0), data...),
	})
	return nil
}

// ErrGenChanged is returned by commit for a transaction whose generation
// check failed: another transaction committed after the one named.
var ErrGenChanged = errors.New("nftables ruleset changed meanwhile")

// Commit sends the transaction (in pieces of perBatch bytes, each atomic
// on its own, when it is that large) and waits for the kernel's
// answer to every message. After an error the socket may still hold
// answers to the failed transaction's other messages: the caller must not
// use it again (table.Host's pool closes it).
func (b *Batch) Commit(c *netlink.Conn) error {
	for lo := 0; lo < len(b.msgs); {
		hi, size := lo, 0
		for hi < len(b.msgs) && (hi == lo || size+len(b.msgs[hi].Data) < perBatch) {
			size += len(b.msgs[hi].Data)
			hi++
		}
		if err := b.commitPart(c, b.msgs[lo:hi]); err != nil {
			return err
		}
		lo = hi
	}
	return nil
}

func (b *Batch) commitPart(c *netlink.Conn, msgs []netlink.Message) error {
	begin := nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)
	if b.Gen != nil {
		ae := netlink.NewAttributeEncoder()
		ae.ByteOrder = binary.BigEndian
		ae.Uint32(unix.NFNL_BATCH_GENID, *b.Gen)
		attrs, err := ae.Encode()
		if err != nil {
			return err
		}
		begin = append(begin, attrs...)
	}
	all := make([]netlink.Message, 0, len(msgs)+2)
	all = append(all, netlink.Message{Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_BEGIN, Flags: netlink.Request}, Data: begin})
	all = append(all, msgs...)
	all = append(all, netlink.Message{Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_END, Flags: netlink.Request},
		Data: nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)})
	if _, err := c.SendMessages(all); err != nil {
		return err
	}
	// Every message asked for an acknowledgement: the kernel answers each
	// once the transaction is decided (an error for the failing ones). A
	// failed generation check is one error for the batch instead.
	for got := 0; got < len(msgs); {
		replies, err := c.Receive()
		if err != nil {
			if errors.Is(err, unix.ERESTART) {
				return ErrGenChanged
			}
			return nl.Wrap(err)
		}
		for _, m := range replies {
			if m.Header.Type == netlink.Error {
				got++
			}
		}
	}
	return nil
}

// RuleGeneration returns the ruleset's current generation (NFT_MSG_GETGEN).
func RuleGeneration(c *netlink.Conn) (uint32, error) {
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(NFTType | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   nfgen(unix.AF_UNSPEC, 0),
	})
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		if gen, err := decodeGen(m.Data); err == nil {
			return gen, nil
		}
	}
	return 0, errNoGen
}

var errNoGen = errors.New("no generation in NFT_MSG_NEWGEN reply")

// decodeGen reads the generation of an NFT_MSG_NEWGEN message.
func decodeGen(data []byte) (uint32, error) {
	if len(data) < NfgenmsgLen {
		return 0, errNoGen
	}
	ad, err := netlink.NewAttributeDecoder(data[NfgenmsgLen:])
	if err != nil {
		return 0, err
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		if ad.Type() == unix.NFTA_GEN_ID {
			return ad.Uint32(), nil
		}
	}
	return 0, errNoGen
}

// ExistAt reports which of els (entries of the library's table, by key)
// are there, and the ruleset's generation read just before them: a
// transaction at that generation (Batch.Gen) commits only if they are
// still as read. One round trip, the generation and one get per entry in
// one send, each answered with one message: the entry, or an error
// (ENOENT: not there).
func ExistAt(c *netlink.Conn, els []Elem) (gen uint32, exist []bool, err error) {
	msgs := []netlink.Message{{
		Header: netlink.Header{Type: netlink.HeaderType(NFTType | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   nfgen(unix.AF_UNSPEC, 0),
	}}
	for _, e := range els {
		data, err := encodeElems(TableName, e.Set, []Elem{{Key: e.Key}})
		if err != nil {
			return 0, nil, err
		}
		msgs = append(msgs, netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(NFTType | unix.NFT_MSG_GETSETELEM), Flags: netlink.Request},
			Data:   append(nfgen(unix.NFPROTO_INET, 0), data...),
		})
	}
	if _, err := c.SendMessages(msgs); err != nil {
		return 0, nil, err
	}
	exist = make([]bool, len(els))
	for i := 0; i < len(msgs); {
		replies, err := c.Receive()
		if err != nil {
			if i == 0 || !errors.Is(err, unix.ENOENT) {
				return 0, nil, nl.Wrap(err)
			}
			i++ // not there
			continue
		}
		for _, m := range replies {
			if i == 0 {
				if gen, err = decodeGen(m.Data); err != nil {
					return 0, nil, err
				}
			} else {
				exist[i-1] = true
			}
			i++
		}
	}
	return gen, exist, nil
}

// DialNFT opens a raw nftables socket in host, with a read buffer large
// enough for the acknowledgements of a big transaction.
func DialNFT(host *netns.Handle) (*netlink.Conn, error) {
	cfg, err := nl.Config(host)
	if err != nil {
		return nil, err
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	runtime.KeepAlive(host)
	if err != nil {
		return nil, fmt.Errorf("dial nftables: %w", err)
	}
	_ = c.SetReadBuffer(4 << 20)
	return c, nil
}

// IsENOENT reports a missing table, chain or set. google/nftables formats
// some receive errors with %v, which drops the errno from the chain, so
// the message is the fallback.
func IsENOENT(err error) bool {
	return err != nil && (errors.Is(err, unix.ENOENT) || strings.HasSuffix(err.Error(), unix.ENOENT.Error()))
}
