package nat

import (
	"testing"
	"time"
)

// TestReleaseOwnerLockOrder: releaseOwner takes hs.mu before ownerMu, as
// leave does (leave holds hs.mu when it takes ownerMu). In the other order
// a Close's leave and another Close's release of the owner socket (after
// its delete) deadlocked (seen in the bench's Connect/Close cycles).
func TestReleaseOwnerLockOrder(t *testing.T) {
	hs := &hostState{ownerFD: -1}
	hs.mu.Lock() // as leave holds it
	done := make(chan struct{})
	go func() {
		hs.releaseOwner()
		close(done)
	}()
	time.Sleep(50 * time.Millisecond) // let it block on hs.mu
	if !hs.ownerMu.TryLock() {
		hs.mu.Unlock()
		<-done
		t.Fatal("releaseOwner holds ownerMu while it waits for hs.mu: leave, holding hs.mu, would wait for ownerMu forever")
	}
	hs.ownerMu.Unlock()
	hs.mu.Unlock()
	<-done
}

// TestLockOrder checks the order written in the package doc (a Link's
// mu, restoreMu, mu, ownerMu, then the leaves) where two of them are held
// at once: each function below, started while the inner lock is held
// elsewhere, must already hold the outer one (not the other way round),
// and functions that take only a leaf lock must not wait for the locks
// before it.
func TestLockOrder(t *testing.T) {
	blocked := func(f func()) chan struct{} {
		done := make(chan struct{})
		go func() { f(); close(done) }()
		time.Sleep(50 * time.Millisecond) // let it block
		return done
	}
	t.Run("restore: restoreMu before mu", func(t *testing.T) {
		hs := &hostState{ownerFD: -1}
		hs.mu.Lock()
		done := blocked(func() { hs.restore(nil) }) // no live links: no I/O
		if hs.restoreMu.TryRLock() {
			hs.restoreMu.RUnlock()
			hs.mu.Unlock()
			t.Fatal("restore waits for mu without holding restoreMu")
		}
		hs.mu.Unlock()
		<-done
	})
	t.Run("monitor and guarded need ownerMu only", func(t *testing.T) {
		hs := &hostState{ownerFD: -1}
		hs.mu.Lock() // as leave holds it when it takes ownerMu
		defer hs.mu.Unlock()
		select {
		case <-blocked(func() { hs.monitor() }):
		case <-time.After(time.Second):
			t.Fatal("monitor waits for mu: leave, holding mu, would wait for it in turn")
		}
	})
}
