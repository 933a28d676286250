package nat

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// nftables' ruleset generation: every committed transaction bumps it, and
// a batch that carries NFNL_BATCH_GENID is refused with ERESTART if the
// generation moved since. That makes "delete the table if no process has
// anything in it" safe against another process adding entries between the
// check and the delete. google/nftables cannot send it, so these two
// messages are built here.
const (
	nfnlBatchGenID = 1    // NFNL_BATCH_GENID
	nftaGenID      = 1    // NFTA_GEN_ID
	nftMsgGetGen   = 0x10 // NFT_MSG_GETGEN
	nftMsgNewGen   = 0x11 // NFT_MSG_NEWGEN
	nftaTableName  = 1    // NFTA_TABLE_NAME
	nfnlSubsysNFT  = 10   // NFNL_SUBSYS_NFTABLES
	nftMsgDelTable = 0x2  // NFT_MSG_DELTABLE
	nfgenmsgLen    = 4    // family, version, res_id
	batchBegin     = 0x10 // NFNL_MSG_BATCH_BEGIN
	batchEnd       = 0x11 // NFNL_MSG_BATCH_END
	nfnetlinkV0    = 0    // NFNETLINK_V0
	nftType        = 10 << 8
)

func nfgen(family uint8, resID uint16) []byte {
	b := make([]byte, nfgenmsgLen)
	b[0], b[1] = family, nfnetlinkV0
	binary.BigEndian.PutUint16(b[2:], resID)
	return b
}

func dialNFT(host *netns.Handle) (*netlink.Conn, error) {
	cfg, err := nl.Config(host)
	if err != nil {
		return nil, err
	}
	return netlink.Dial(unix.NETLINK_NETFILTER, cfg)
}

// ruleGeneration returns the ruleset's current generation.
func ruleGeneration(c *netlink.Conn) (uint32, error) {
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(nftType | nftMsgGetGen), Flags: netlink.Request},
		Data:   nfgen(unix.AF_UNSPEC, 0),
	})
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		if len(m.Data) < nfgenmsgLen {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[nfgenmsgLen:])
		if err != nil {
			return 0, err
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == nftaGenID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("no generation in NFT_MSG_NEWGEN reply")
}

// errGenChanged is returned by delTableAtGen when another transaction
// committed after gen: the caller must look again.
var errGenChanged = errors.New("nftables ruleset changed meanwhile")

// delTableAtGen deletes the library's table in a batch that only commits
// if the ruleset is still at generation gen.
func delTableAtGen(c *netlink.Conn, gen uint32) error {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Uint32(nfnlBatchGenID, gen)
	beginAttrs, err := ae.Encode()
	if err != nil {
		return err
	}
	te := netlink.NewAttributeEncoder()
	te.String(nftaTableName, TableName)
	tableAttrs, err := te.Encode()
	if err != nil {
		return err
	}
	msgs := []netlink.Message{
		{Header: netlink.Header{Type: batchBegin, Flags: netlink.Request},
			Data: append(nfgen(unix.AF_UNSPEC, nfnlSubsysNFT), beginAttrs...)},
		{Header: netlink.Header{Type: netlink.HeaderType(nftType | nftMsgDelTable), Flags: netlink.Request | netlink.Acknowledge},
			Data: append(nfgen(unix.AF_INET, 0), tableAttrs...)},
		{Header: netlink.Header{Type: batchEnd, Flags: netlink.Request},
			Data: nfgen(unix.AF_UNSPEC, nfnlSubsysNFT)},
	}
	if _, err := c.SendMessages(msgs); err != nil {
		return err
	}
	_, err = c.Receive() // the one acknowledgement (or the batch's error)
	switch {
	case errors.Is(err, unix.ERESTART):
		return errGenChanged
	case errors.Is(err, unix.ENOENT):
		return nil // already gone
	case err != nil:
		return fmt.Errorf("delete table: %w", err)
	}
	return nil
}
