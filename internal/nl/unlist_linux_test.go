package nl_test

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/veth"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// TestDeleteLinks: when DeleteLinks returns, the links and their veth
// peers (in another namespace) are gone from listings, without waiting
// for the kernel's acknowledgement; a link gone already is reported per
// link (os.ErrNotExist) and the others still go; after runs exactly once,
// for one link and for a group.
func TestDeleteLinks(t *testing.T) {
	nstest.Require(t)
	host, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	peers, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	defer peers.Close()
	hc, err := nl.Dial(host)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	pc, err := nl.Dial(peers)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pairs := func(tag string, n int) (idx, peer []int) {
		for i := range n {
			name, peerName := fmt.Sprintf("%s%d", tag, i), fmt.Sprintf("%sp%d", tag, i)
			if err := veth.Create(host, veth.Config{Name: name, PeerName: peerName, PeerNS: peers, Up: true}); err != nil {
				t.Fatal(err)
			}
			a, err := hc.LinkIndex(name)
			if err != nil {
				t.Fatal(err)
			}
			b, err := pc.LinkIndex(peerName)
			if err != nil {
				t.Fatal(err)
			}
			idx, peer = append(idx, a), append(peer, b)
		}
		return idx, peer
	}
	listed := func(c *nl.Conn, idx []int) (n int) {
		for _, i := range idx {
			if _, err := c.Query(nl.GetLinkByIndex(i)); err == nil {
				n++
			} else if !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
		}
		return n
	}
	for _, c := range []struct {
		name    string
		n       int
		missing bool
	}{{"one", 1, false}, {"group", 3, false}, {"group with one gone", 3, true}} {
		idx, peer := pairs("dl", c.n)
		if c.missing {
			idx = append(idx, 1<<30-1) // no such link
		}
		var ran atomic.Int32
		acked := make(chan struct{})
		t0 := time.Now()
		gone, err := nl.DeleteLinks(host, hc, idx, func() { ran.Add(1); close(acked) })
		took := time.Since(t0)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if n := listed(hc, idx) + listed(pc, peer); n != 0 {
			t.Errorf("%s: %d links still listed when DeleteLinks returned", c.name, n)
		}
		for i, e := range gone {
			if want := c.missing && i == len(idx)-1; errors.Is(e, os.ErrNotExist) != want {
				t.Errorf("%s: link %d: gone %v", c.name, i, e)
			}
		}
		select {
		case <-acked:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: after never ran", c.name)
		}
		time.Sleep(10 * time.Millisecond)
		if ran.Load() != 1 {
			t.Errorf("%s: after ran %d times", c.name, ran.Load())
		}
		t.Logf("%s: returned after %v", c.name, took)
	}
}
