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
