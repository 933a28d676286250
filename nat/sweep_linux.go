package nat

import (
	"context"
	"fmt"

	"github.com/nsnet/nsnet/nat/internal/sweep"
	"github.com/nsnet/nsnet/netns"
)

// sysSweep is Sweep on Linux.
func sysSweep(ctx context.Context, host *netns.Handle) (SweepResult, error) {
	res, err := sweepHost(ctx, host)
	if err != nil {
		return res, fmt.Errorf("nat: sweep: %w", err)
	}
	return res, nil
}

// sweepHost is Sweep of the host namespace hostNS (see sweep.Host).
func sweepHost(ctx context.Context, hostNS *netns.Handle) (SweepResult, error) {
	host, err := openHost(hostNS)
	if err != nil {
		return SweepResult{}, err
	}
	defer host.Close()
	res, err := sweep.Host(ctx, host)
	return SweepResult(res), err
}
