package bridgeset

import (
	"testing"

	"github.com/nsnet/nsnet/internal/nftgolden"
)

// TestSkeletonGolden: the bridge table, its sets, chains and rules, byte
// for byte as sent to the kernel (the privileged tests check what the
// kernel makes of them with nft and real traffic). Runs without root.
func TestSkeletonGolden(t *testing.T) {
	nftgolden.Check(t, "skeleton.golden", nftgolden.Messages(t, AddSkeleton))
}
