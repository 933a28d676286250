package nstest

import (
	"regexp"
	"strings"
)

// operstate matches the "state UP" word of ip link/addr output.
var operstate = regexp.MustCompile(` state [A-Z_]+`)

// Steady drops from ip's text output what the kernel changes on its own
// after a link comes up, so that snapshots taken before and after a
// step compare only what the step could have changed:
//   - the operational state ("state UNKNOWN" becomes "state UP" when the
//     kernel's linkwatch work runs, up to a second after the link came up);
//   - IPv6 link-local addresses and their routes, and the ff00::/8
//     multicast route, which addrconf adds once the carrier is seen;
//   - the "tentative" flag, which DAD clears after about a second.
//
// Without it such comparisons failed at random (CI run of stop 8: an
// addr test saw a0's fe80:: address appear between its two snapshots).
func Steady(out string) string {
	lines := strings.Split(out, "\n")
	kept := lines[:0]
	skipLifetime := false
	for _, l := range lines {
		if skipLifetime && strings.Contains(l, "valid_lft") {
			skipLifetime = false
			continue
		}
		skipLifetime = false
		if strings.Contains(l, "fe80::") || strings.Contains(l, "ff00::/8") {
			// An "ip addr" entry continues with its lifetimes line.
			skipLifetime = strings.Contains(l, "inet6 ")
			continue
		}
		l = operstate.ReplaceAllString(l, "")
		l = strings.ReplaceAll(l, " tentative", "")
		kept = append(kept, l)
	}
	return strings.Join(kept, "\n")
}
