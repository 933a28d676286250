package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

type uplinkRef struct {
	users      int  // this process's links out of the uplink
	registered bool // this process is in the fwd set for it
}

// acquireUplink counts one more user of the uplink in this process and
// adds the link's set entries e: the first user registers the process in
// the fwd set in the same transaction (see fwdRegister), the others add e
// alone.
func (hs *hostState) acquireUplink(hc *nl.Conn, host *netns.Handle, up uplinkInfo, e elements) error {
	// fwdMu is taken even by later users: it makes them wait until a first
	// user's registration (forwarding on) is done. It is not held while
	// they add their entries.
	hs.fwdMu.Lock()
	hs.mu.Lock()
	ref := hs.uplinks[up.index]
	if ref == nil {
		ref = &uplinkRef{}
		hs.uplinks[up.index] = ref
	}
	ref.users++
	// The first user registers; so does a later one if the first failed.
	first := !ref.registered
	hs.mu.Unlock()
	if !first {
		hs.fwdMu.Unlock()
		if err := hs.addElements(host, e); err != nil {
			hs.mu.Lock()
			ref.users--
			hs.mu.Unlock()
			return fmt.Errorf("nftables: %w", err)
		}
		return nil
	}
	defer hs.fwdMu.Unlock()
	if err := withHostLock(host, func() error { return hs.fwdRegister(hc, host, up, e) }); err != nil {
		hs.mu.Lock()
		ref.users--
		if ref.users == 0 {
			delete(hs.uplinks, up.index)
		}
		hs.mu.Unlock()
		return fmt.Errorf("uplink forwarding: %w", err)
	}
	hs.mu.Lock()
	ref.registered = true
	hs.mu.Unlock()
	return nil
}

// releaseUplink drops one user of the uplink and removes the link's set
// entries e; the last user in this process also unregisters it, in the
// same transaction (see fwdUnregister): each nftables commit that removes
// entries can cost the kernel milliseconds, so one is better than two.
func (hs *hostState) releaseUplink(hc *nl.Conn, host *netns.Handle, index int, name string, e elements) error {
	hs.fwdMu.Lock()
	defer hs.fwdMu.Unlock()
	hs.mu.Lock()
	ref := hs.uplinks[index]
	last := false
	if ref != nil {
		ref.users--
		if last = ref.users == 0; last {
			delete(hs.uplinks, index)
		}
	}
	hs.mu.Unlock()
	if !last {
		if e.empty() {
			return nil
		}
		return hs.flush(host, func(c *nftables.Conn) error { return e.apply(c, false) })
	}
	return withHostLock(host, func() error { return hs.fwdUnregister(hc, host, index, name, e) })
}

// An uplink's forwarding is shared by every nsnet process with links out
// of it, and must go back to what it was before the first of them once the
// last is gone, whoever that is and even if some crashed. The fwd set
// holds one entry per (uplink, process), commented with the owner mark and
// the original setting ("orig=off" or "orig=on"); registrations and
// unregistrations happen under a lock shared by the processes of the host
// namespace (withHostLock), so a check and the change it decides cannot
// interleave with another process's.
const (
	origOff = " orig=off"
	origOn  = " orig=on"
)

func fwdKey(uplink string, pid int) []byte {
	k := ifname(uplink)
	return binary.BigEndian.AppendUint32(k, uint32(pid))
}

type fwdEntry struct {
	el      nftables.SetElement
	uplink  string
	alive   bool
	mine    bool
	origOff bool
}

func readFwd(c *nftables.Conn, uplink string) ([]fwdEntry, error) {
	els, err := c.GetSetElements(setByName[setFwd])
	if err != nil {
		return nil, fmt.Errorf("read fwd set: %w", err)
	}
	var out []fwdEntry
	for _, e := range els {
		if len(e.Key) < unix.IFNAMSIZ+4 {
			continue
		}
		name := strings.TrimRight(string(e.Key[:unix.IFNAMSIZ]), "\x00")
		if uplink != "" && name != uplink {
			continue
		}
		o, ok := parseOwner(e.Comment)
		out = append(out, fwdEntry{
			el: e, uplink: name, alive: ok && o.alive(), mine: ok && o.pid == os.Getpid(),
			origOff: strings.HasSuffix(e.Comment, origOff),
		})
	}
	return out, nil
}

// fwdRegister records this process as a user of the uplink. If no live
// process uses it yet, the original setting is the current one — unless a
// dead user left a record saying it was off — and forwarding is turned on.
// Otherwise the live users' record of the original is copied.
func (hs *hostState) fwdRegister(hc *nl.Conn, host *netns.Handle, up uplinkInfo, e elements) error {
	c, err := hs.nft(host)
	if err != nil {
		return err
	}
	entries, err := readFwd(c, up.name)
	hs.putNFT(c, err)
	needTable := isENOENT(err) // another process removed it since: make it again
	if err != nil && !needTable {
		return err
	}
	var dead []nftables.SetElement
	live, wasOff := false, false
	for _, e := range entries {
		switch {
		case e.alive && !e.mine:
			live, wasOff = true, e.origOff
		case !e.alive:
			dead = append(dead, e.el)
			wasOff = wasOff || e.origOff
		}
	}
	turnOn := false
	if !live {
		// Read again here, under the lock, not taken from inspectHost's
		// reply: another process may have changed it since.
		msgs, err := hc.Query(nl.GetLinkByIndex(up.index))
		if err != nil {
			return err
		}
		on, _ := nl.Forwarding(msgs[0].Data)
		wasOff, turnOn = wasOff || !on, !on
	}
	mark := ownerMark + origOn
	if wasOff {
		mark = ownerMark + origOff
	}
	// Another process may make or remove the table between the read and
	// the commit (it removes it only when it holds no entries, so none of
	// what was read is lost): flushWithTable follows it.
	err = hs.flushWithTable(host, needTable, func(c *nftables.Conn) error {
		if len(dead) > 0 {
			if err := c.SetDeleteElements(setByName[setFwd], dead); err != nil {
				return err
			}
		}
		if err := e.apply(c, true); err != nil {
			return err
		}
		return c.SetAddElements(setByName[setFwd], []nftables.SetElement{{Key: fwdKey(up.name, os.Getpid()), Comment: mark}})
	})
	if err != nil {
		return err
	}
	if turnOn {
		if err := hc.Exec(nl.SetForwarding(up.index, true)); err != nil {
			hs.flush(host, func(c *nftables.Conn) error {
				e.apply(c, false)
				return c.SetDeleteElements(setByName[setFwd], []nftables.SetElement{{Key: fwdKey(up.name, os.Getpid())}})
			})
			return err
		}
	}
	return nil
}

// fwdUnregister removes this process's record; if no live user is left,
// forwarding goes back off when it was off originally.
func (hs *hostState) fwdUnregister(hc *nl.Conn, host *netns.Handle, index int, name string, e elements) error {
	c, err := hs.nft(host)
	if err != nil {
		return err
	}
	entries, err := readFwd(c, name)
	hs.putNFT(c, err)
	if isENOENT(err) {
		return nil // the table is gone: someone swept it all
	}
	if err != nil {
		return err
	}
	var gone []nftables.SetElement
	others, wasOff := false, false
	for _, e := range entries {
		if e.alive && !e.mine {
			others = true
			continue
		}
		gone = append(gone, e.el)
		wasOff = wasOff || e.origOff
	}
	if !others && wasOff {
		if err := hc.Exec(nl.SetForwarding(index, false)); err != nil {
			return err
		}
	}
	if len(gone) == 0 && e.empty() {
		return nil
	}
	return hs.flush(host, func(c *nftables.Conn) error {
		if err := e.apply(c, false); err != nil {
			return err
		}
		if len(gone) == 0 {
			return nil
		}
		return c.SetDeleteElements(setByName[setFwd], gone)
	})
}

// withHostLock runs fn while holding a lock shared by every process in the
// host namespace: an abstract unix socket name, which is scoped to a
// network namespace and bound by one socket at a time, and released by the
// kernel when its holder exits, even by SIGKILL.
func withHostLock(host *netns.Handle, fn func() error) error {
	var fd int
	bind := func() error {
		var err error
		fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: "@nsnet-uplink-forwarding"}); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := host.Do(bind)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EADDRINUSE) || time.Now().After(deadline) {
			return fmt.Errorf("host lock: %w", err)
		}
		time.Sleep(time.Millisecond)
	}
	defer unix.Close(fd)
	return fn()
}
