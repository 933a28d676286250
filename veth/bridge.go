package veth

import (
	"github.com/nsnet/nsnet/internal/nl"
	"github.com/nsnet/nsnet/netns"
)

// CreateBridge makes a Linux bridge called name in ns (nil: the current
// namespace), down and without ports ("ip link add NAME type bridge"). An
// existing name gives an error matching os.ErrExist. Bring it up with
// SetUp, give it addresses with package addr, ports with SetMaster, and
// remove it with Delete (its ports stay, without a master).
func CreateBridge(ns *netns.Handle, name string) error {
	return nl.NeedPriv(sysCreateBridge(ns, name), "CAP_NET_ADMIN in the namespace")
}

// SetMaster makes the link called name a port of the bridge called master
// ("ip link set NAME master MASTER"), or, with master "", of none
// ("nomaster"). A missing link or bridge gives an error matching
// os.ErrNotExist; a master that is not a bridge (or bond) is the kernel's
// refusal.
func SetMaster(ns *netns.Handle, name, master string) error {
	return nl.NeedPriv(sysSetMaster(ns, name, master), "CAP_NET_ADMIN in the namespace")
}
