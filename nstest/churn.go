package nstest

import (
	"sync"
	"sync/atomic"
	"testing"
)

// Churner runs a round of changes over and over on a goroutine of its
// own: for tests of code that reads what others change at the same time
// (listings under churn). See Churn.
type Churner struct {
	rounds   atomic.Int64
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// Churn starts running round over and over until Stop is called or t
// ends.
func Churn(t testing.TB, round func()) *Churner {
	c := &Churner{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			select {
			case <-c.stop:
				return
			default:
			}
			round()
			c.rounds.Add(1)
		}
	}()
	t.Cleanup(func() { c.Stop() })
	return c
}

// Rounds is how many rounds have finished so far.
func (c *Churner) Rounds() int { return int(c.rounds.Load()) }

// Stop ends the churn once the round under way has finished, and returns
// how many rounds ran.
func (c *Churner) Stop() int {
	c.stopOnce.Do(func() { close(c.stop) })
	<-c.done
	return c.Rounds()
}
