package nat

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/nsnet/nsnet/nat/internal/addrplan"
	"github.com/nsnet/nsnet/netns"
)

// autoConnect connects ns with the next free prefix of the pool (see
// Config.Pool): a candidate that overlaps this process's links, another
// process's or the host's routes fails Connect's own checks (ErrOverlap,
// before anything is made but for another process's claim, which the
// entries' transaction refuses), and the next one is tried.
func (c Config) autoConnect(ctx context.Context, ns *netns.Handle, uplink string) (*Link, error) {
	pool, bits := c.Pool, c.PoolBits
	if pool == (netip.Prefix{}) {
		pool = DefaultPool
	}
	if bits == 0 {
		bits = 24
	}
	pl, err := addrplan.PoolOf(pool, bits)
	if err != nil {
		return nil, err
	}
	for range pl.Size() {
		l, err := c.connect(ctx, ns, uplink, pl.Next())
		if !errors.Is(err, ErrOverlap) || ctx.Err() != nil {
			return l, err
		}
	}
	return nil, fmt.Errorf("%w: %v has no /%d that overlaps nothing", ErrPoolExhausted, pool, bits)
}
