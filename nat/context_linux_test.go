package nat_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nstest"
	"golang.org/x/sys/unix"
)

// TestConnectContext: a done context stops Connect before it changes
// anything; one that runs out while another process holds the host lock
// makes Connect give up then, undo what it made and say why; a nil one is
// refused. Sweep likewise.
func TestConnectContext(t *testing.T) {
	requireTools(t)
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "ctx-")
	ns := nstest.NewNS(t, "ctx-ns")
	p := netip.MustParsePrefix("10.32.0.0/24")
	before := state(t, w)
	cfg := nat.Config{HostNS: w.Host}

	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := cfg.ConnectContext(done, ns, "up0", p); !errors.Is(err, context.Canceled) {
		t.Errorf("ConnectContext with a done context: %v, want context.Canceled", err)
	}
	sameState(t, w, before, "state after a cancelled Connect")
	//lint:ignore SA1012 a nil context is what is tested
	if _, err := cfg.ConnectContext(nil, ns, "up0", p); !errors.Is(err, nat.ErrInvalidConfig) {
		t.Errorf("ConnectContext with a nil context: %v, want ErrInvalidConfig", err)
	}

	// Another process holds the host lock (its abstract socket).
	var lock int
	err := w.Host.Do(func() (err error) {
		if lock, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		return unix.Bind(lock, &unix.SockaddrUnix{Name: "@nsnet-lock"})
	})
	if err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := cfg.ConnectContext(short, ns, "up0", p); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ConnectContext while the lock is held: %v, want context.DeadlineExceeded", err)
	}
	short2, cancel3 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel3()
	if _, err := nat.SweepContext(short2, w.Host); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("SweepContext while the lock is held: %v, want context.DeadlineExceeded", err)
	}
	unix.Close(lock)
	sameState(t, w, before, "state after Connect gave up on the lock")

	l, err := cfg.ConnectContext(context.Background(), ns, "up0", p)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}
