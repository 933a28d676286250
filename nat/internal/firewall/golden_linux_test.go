package firewall

import (
	"testing"

	"github.com/google/nftables"
	"github.com/nsnet/nsnet/internal/nftgolden"
)

// TestDockerUserGolden: the two DOCKER-USER rules in iptables-nft's shapes.
func TestDockerUserGolden(t *testing.T) {
	nftgolden.Check(t, "dockeruser.golden", nftgolden.Messages(t, func(c *nftables.Conn) error {
		for _, r := range dockerUserRules(dockerTable, "nsn-abcdefghijk", "nsnet owner=abcdefghijkl pid=1 link=nsn-abcdefghijk index=536870912") {
			c.InsertRule(r)
		}
		return nil
	}))
}
