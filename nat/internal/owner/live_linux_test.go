package owner_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// TestHostLock: one holder at a time; a waiter gets the lock when the
// holder lets go, also past DefaultLockWait when its context allows it;
// a wait that runs out says who holds the lock and matches
// context.DeadlineExceeded.
func TestHostLock(t *testing.T) {
	nstest.Require(t)
	host, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	defer func(d time.Duration) { owner.DefaultLockWait = d }(owner.DefaultLockWait)
	owner.DefaultLockWait = 100 * time.Millisecond

	held, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		owner.WithHostLock(context.Background(), host, func() error { close(held); <-release; return nil })
	}()
	<-held
	err = owner.WithHostLock(context.Background(), host, func() error { return nil })
	want := fmt.Sprintf("pid %d", os.Getpid())
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), want) {
		t.Errorf("a wait past DefaultLockWait: %v (want DeadlineExceeded, naming %s)", err, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	time.AfterFunc(300*time.Millisecond, func() { close(release) })
	ran := false
	if err := owner.WithHostLock(ctx, host, func() error { ran = true; return nil }); err != nil || !ran {
		t.Errorf("a wait with a longer deadline than DefaultLockWait: %v (ran %v)", err, ran)
	}
	wg.Wait()
}

// TestLive: an owner whose socket is bound is alive; once it is closed
// (as when its process dies) it is not; this process and the persistent
// owner always are.
func TestLive(t *testing.T) {
	nstest.Require(t)
	host, err := netns.NewAnonymous()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	other := owner.RandomString(12)
	var fd int
	err = host.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrUnix{Name: "@nsnet-owner-" + other})
	})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{other, owner.ID, owner.PersistentID, owner.RandomString(12)}
	live, err := owner.Live(host, ids)
	if err != nil || !live[other] || !live[owner.ID] || !live[owner.PersistentID] || live[ids[3]] {
		t.Errorf("Live = %v, %v", live, err)
	}
	unix.Close(fd)
	if live, err := owner.Live(host, ids[:1]); err != nil || live[other] {
		t.Errorf("after its socket closed: Live = %v, %v", live, err)
	}
}
