package nat

// Persistent links (Config.Persistent) outlive the process that made them,
// for programs that set a namespace up and exit, as CNI plugins do. Their
// marks name the persistent owner, which every process takes for live, so
// Sweep and other processes' Connects never remove them; any process
// removes one with Remove, from the kernel's record of it (the set
// entries' comments, the host end's ifalias), since the process that made
// it is gone. The persistent owner shares an uplink's forwarding as any
// owner does, with one entry per uplink and family in the uplinks set while
// at least one persistent link leaves by it.

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/nsnet/nsnet/nat/internal/flows"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/nat/internal/sweep"
	"github.com/nsnet/nsnet/nat/internal/uplinks"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/netns"
)

// persistentEntryMark is the comment of a persistent link's set entries
// (and, with the tag, its host end's ifalias).
func persistentEntryMark(hostVeth, tag string) string {
	m := owner.Persistent
	m.Link, m.Tag = hostVeth, tag
	return m.String()
}

// addPersistent adds the entries of a new persistent link and, for the
// first persistent link out of an uplink in a family, the persistent
// owner's share of the uplink's forwarding (as register does for a
// process), under the host lock.
func (hs *hostState) addPersistent(ctx context.Context, host *netns.Handle, hc *nl.Conn, e nftset.Entries) error {
	return owner.WithHostLock(ctx, host, func() error {
		_, _, err := uplinks.Share(host, hc, &hs.tbl, e, uplinks.KeysOf(e), owner.Persistent, true)
		return err
	})
}

// removePersistent removes the persistent link whose host end was called
// hostVeth at Connect (index, if not 0, is its interface index, if it is
// still there): the pair, its connections, its set entries, and the
// persistent owner's share of an uplink's forwarding when no persistent
// link leaves by it any more. found says whether anything of it was there.
func removePersistent(ctx context.Context, host *netns.Handle, index int, hostVeth string) (found bool, err error) {
	hc, err := nl.Dial(host)
	if err != nil {
		return false, err
	}
	defer hc.Close()
	var errs []error
	if index != 0 {
		gone, err := quiesce(host, hc, []int{index}, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("veth: %w", err))
		} else if !gone[0] {
			found = true
		}
		if err := flows.Forget(host, index); err != nil {
			errs = append(errs, fmt.Errorf("conntrack: %w", err))
		}
	}
	err = owner.WithHostLock(ctx, host, func() error {
		f, err := sweep.Persistent(host, hc, hostVeth)
		found = found || f
		return err
	})
	if err != nil {
		errs = append(errs, err)
	}
	return found, errors.Join(errs...)
}

// sysRemove is Remove on Linux.
func sysRemove(ctx context.Context, hostNS *netns.Handle, hostVeth string) error {
	if err := nl.CheckIfName(hostVeth); err != nil {
		return err
	}
	host, err := openHost(hostNS)
	if err != nil {
		return err
	}
	defer host.Close()
	hc, err := nl.Dial(host)
	if err != nil {
		return err
	}
	defer hc.Close()
	index, err := sweep.PersistentIndex(host, hc, hostVeth)
	if err != nil {
		return err
	}
	found, err := removePersistent(ctx, host, index, hostVeth)
	if err == nil && !found {
		err = fmt.Errorf("persistent link %s: %w", hostVeth, os.ErrNotExist)
	}
	return err
}

// sysPersistentLinks is PersistentLinks on Linux.
func sysPersistentLinks(hostNS *netns.Handle) ([]PersistentLink, error) {
	host, err := openHost(hostNS)
	if err != nil {
		return nil, err
	}
	defer host.Close()
	pls, err := sweep.PersistentLinks(host)
	out := make([]PersistentLink, 0, len(pls))
	for _, pl := range pls {
		out = append(out, PersistentLink(pl))
	}
	return out, err
}
