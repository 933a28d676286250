package nat

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/nsnet/nsnet/nat/internal/addrplan"
	"github.com/nsnet/nsnet/netns"
)

// autoConnect connects ns with the next free prefix of the pool (see
// Config.Pool) when cidr is zero, and the next free /64 of the host
// namespace's ULA /48 with AutoPrefix6 (or as its only network, for the
// cidr AutoIPv6): a candidate that overlaps this
// process's links, another process's or the host's routes fails Connect's
// own checks (ErrOverlap, before anything is made but for another
// process's claim, which the entries' transaction refuses), and the next
// one is tried (for a given cidr that overlaps, a few times only).
func (c Config) autoConnect(ctx context.Context, ns *netns.Handle, uplink string, cidr netip.Prefix) (*Link, error) {
	pool, bits := cmp.Or(c.Pool, DefaultPool), cmp.Or(c.PoolBits, 24)
	var pl *addrplan.Pool
	var pl6 *addrplan.Pool6
	tries, v6only := 16, cidr == AutoIPv6
	if cidr == (netip.Prefix{}) {
		var err error
		if pl, err = addrplan.PoolOf(pool, bits); err != nil {
			return nil, err
		}
		tries = pl.Size()
	}
	if c.AutoPrefix6 || v6only {
		host, err := openHost(c.HostNS)
		if err != nil {
			return nil, err
		}
		pl6 = addrplan.Pool6Of(addrplan.ULA48(host.ID()))
		host.Close()
	}
	var err error
	for range tries {
		var l *Link
		if pl != nil {
			cidr = pl.Next()
		}
		if pl6 != nil {
			c.Prefix6 = pl6.Next()
		}
		if v6only {
			cidr, c.Prefix6 = c.Prefix6, netip.Prefix{} // an IPv6 cidr: IPv6 only
		}
		if l, err = c.connect(ctx, ns, uplink, cidr); !errors.Is(err, ErrOverlap) || ctx.Err() != nil {
			return l, err
		}
	}
	if pl == nil {
		return nil, err // (the given cidr overlaps)
	}
	return nil, fmt.Errorf("%w: %v has no /%d that overlaps nothing", ErrPoolExhausted, pool, bits)
}
