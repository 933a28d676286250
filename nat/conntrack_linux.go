package nat

import (
	"errors"

	"github.com/nsnet/nsnet/nat/internal/flows"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/netns"
	"github.com/ti-mo/conntrack"
)

// forgetLinkFlows forgets the connections of closing links: those they
// made (see flows.Forget) and those made to their published ports, by the
// outside and by other links (see flows.ForgetPorts).
func (hs *hostState) forgetLinkFlows(host *netns.Handle, links []*owned) error {
	idx := make([]int, 0, len(links))
	var ports []nftset.PortMap
	for _, o := range links {
		idx = append(idx, o.hostIdx)
		ports = append(ports, o.ent.Ports...)
	}
	return hs.tbl.WithConntrack(host, func(c *conntrack.Conn) error {
		err := flows.ForgetMarked(c, idx...)
		if len(ports) > 0 {
			err = errors.Join(err, flows.ForgetPorts(c, ports))
		}
		return err
	})
}
