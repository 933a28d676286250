package addrplan

import (
	"fmt"
	"net/netip"
	"strings"
)

// DescribeLink is nat.Link's String: for each family's network (zero if
// none), the network, the host end's and the namespace's addresses.
func DescribeLink(fams [2][3]netip.Prefix, hostVeth, nsVeth, uplink string) string {
	var nets, host, ns []string
	for _, f := range fams {
		if f[0].IsValid() {
			nets = append(nets, f[0].String())
			host = append(host, f[1].Addr().String())
			ns = append(ns, f[2].Addr().String())
		}
	}
	j := func(s []string) string { return strings.Join(s, ", ") }
	return fmt.Sprintf("%s: host %s (%s) <-> namespace %s (%s), uplink %s", j(nets), hostVeth, j(host), nsVeth, j(ns), uplink)
}
