package veth

import (
	"errors"
	"fmt"
	"net"

	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
)

// ErrInvalidName is matched by the error for a malformed interface name; it is
// netns.ErrInvalidName (one value across nsnet).
var ErrInvalidName = nl.ErrInvalidName

// ErrInterrupted is matched by List's error when the links kept changing
// while they were read, through every read for two seconds (List reads
// again after growing pauses; a change during a read makes the read
// incomplete). It is one value in every package that returns it.
var ErrInterrupted = nl.ErrInterrupted

// ErrInvalidConfig is matched by the error for a Config that cannot be
// created (bad MTU, bad hardware address, both ends with one name).
var ErrInvalidConfig = errors.New("invalid veth config")

// Config describes a veth pair. The zero value is not valid: both names
// are needed.
type Config struct {
	// Name is the end created in the namespace passed to Create.
	Name string
	// PeerName is the other end, created directly in PeerNS.
	PeerName string
	// PeerNS is the namespace of the peer; nil puts it next to Name.
	PeerNS *netns.Handle
	// MTU of both ends; 0 keeps the kernel default (1500). 68 to 65535.
	MTU int
	// HardwareAddr and PeerHardwareAddr are the ends' MAC addresses; nil
	// lets the kernel pick random ones.
	HardwareAddr, PeerHardwareAddr net.HardwareAddr
	// Up brings both ends up: Name in the creating request itself, the
	// peer by a second request in its namespace (the kernel cannot open a
	// veth end before it is linked to its peer).
	Up bool
}

func (c *Config) validate() error {
	if err := nl.CheckIfName(c.Name); err != nil {
		return err
	}
	if err := nl.CheckIfName(c.PeerName); err != nil {
		return err
	}
	if c.Name == c.PeerName && c.PeerNS == nil {
		return fmt.Errorf("%w: both ends are called %q in one namespace", ErrInvalidConfig, c.Name)
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		return fmt.Errorf("%w: MTU %d outside 68..65535", ErrInvalidConfig, c.MTU)
	}
	for _, hw := range []net.HardwareAddr{c.HardwareAddr, c.PeerHardwareAddr} {
		if hw != nil && (len(hw) != 6 || hw[0]&1 != 0 || string(hw) == "\x00\x00\x00\x00\x00\x00") {
			return fmt.Errorf("%w: hardware address %v is not a unicast Ethernet address", ErrInvalidConfig, hw)
		}
	}
	return nil
}

// List returns every link of ns (nil: the current namespace), in index
// order: the "ip link show" equivalent.
func List(ns *netns.Handle) ([]Link, error) {
	v, err := sysList(ns)
	return v, nl.NeedPriv(err, "CAP_NET_ADMIN in the namespace")
}

// Lookup returns the link called name in ns, in one round trip (the kernel
// resolves the name). A missing link matches os.ErrNotExist.
func Lookup(ns *netns.Handle, name string) (Link, error) {
	v, err := sysLookup(ns, name)
	return v, nl.NeedPriv(err, "CAP_NET_ADMIN in the namespace")
}

// SetUp brings the link called name up ("ip link set dev NAME up").
func SetUp(ns *netns.Handle, name string) error {
	return nl.NeedPriv(sysSetUp(ns, name), "CAP_NET_ADMIN in the namespace")
}

// SetDown brings the link called name down ("ip link set dev NAME down").
func SetDown(ns *netns.Handle, name string) error {
	return nl.NeedPriv(sysSetDown(ns, name), "CAP_NET_ADMIN in the namespace")
}

// Delete deletes the link called name; for a veth, its peer goes too
// ("ip link del NAME"). It waits for the kernel, which for a veth means
// one RCU grace period (tens of milliseconds).
func Delete(ns *netns.Handle, name string) error {
	return nl.NeedPriv(sysDelete(ns, name), "CAP_NET_ADMIN in the namespace")
}

// Move moves the link called name from ns into the namespace to
// ("ip link set dev NAME netns TO"). The kernel brings the link down and
// removes its addresses on the way; its index may differ in to, so look it
// up by name there.
func Move(ns *netns.Handle, name string, to *netns.Handle) error {
	return nl.NeedPriv(sysMove(ns, name, to), "CAP_NET_ADMIN in the namespace")
}

// Create makes a veth pair: c.Name in ns (nil: the current namespace) and
// c.PeerName created directly inside c.PeerNS, in one request. The config is
// checked before the kernel sees it. An existing name in either namespace
// gives an error matching os.ErrExist and creates nothing. Needs
// CAP_NET_ADMIN in both namespaces.
func Create(ns *netns.Handle, c Config) error {
	return nl.NeedPriv(sysCreate(ns, c), "CAP_NET_ADMIN in the namespace")
}
