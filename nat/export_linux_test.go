package nat

import (
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/nat/internal/dns"
	"github.com/nsnet/nsnet/nat/internal/nftset"
)

// NewestRule is the comment of the rule that tells this version's table
// from an older one's (see nftset.CheckRules).
const NewestRule = nftset.NewestRule

// SetFailHook makes f run before each step of Connect and Close (steps of
// Close are named "close STEP"); a non-nil error fails that step. nil
// removes it. For tests only: not safe to change while Connects run.
func SetFailHook(f func(step string) error) { failHook = f }

// SetHostResolvConf points Connect at another host resolv.conf (a missing
// one, for the host without one); "" restores /etc/resolv.conf.
func SetHostResolvConf(path string) {
	if path == "" {
		path = "/etc/resolv.conf"
	}
	dns.HostResolvConf = path
}

// SetIPv6GlobalMode makes Connect run as on a kernel before Linux 6.17,
// without per-interface IPv6 forwarding (force_forwarding reads as
// missing), with every Config taken as setting IPv6GlobalForwarding. For
// tests only (TestMain, from NSNET_IPV6_GLOBAL): not safe to change while
// Connects run.
func SetIPv6GlobalMode(on bool) {
	nl.ForceForwarding, globalV6ForTests = "force_forwarding", on
	if on {
		nl.ForceForwarding = "force_forwarding_hidden_by_nsnet_test"
	}
}

// SetNoForceForwarding makes force_forwarding read as missing (a kernel
// before Linux 6.17) without taking Configs as opting in: see
// SetIPv6GlobalMode.
func SetNoForceForwarding(on bool) {
	SetIPv6GlobalMode(on)
	globalV6ForTests = false
}

// SetNoTmpfile makes resolv.conf files be written through a named
// temporary file, as on a file system without O_TMPFILE.
func SetNoTmpfile(on bool) { dns.NoTmpfile = on }
