package nat

import "github.com/nsnet/nsnet/nat/internal/dns"

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
