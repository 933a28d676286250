package veth_test

import (
	"testing"

	"github.com/nsnet/nsnet/veth"
	"golang.org/x/sys/unix"
)

// TestFlagsMatchKernel: the flags numbered by hand (so that veth builds
// everywhere) are the kernel's.
func TestFlagsMatchKernel(t *testing.T) {
	for _, c := range []struct {
		got  veth.Flags
		want int
	}{
		{veth.FlagUp, unix.IFF_UP}, {veth.FlagBroadcast, unix.IFF_BROADCAST}, {veth.FlagDebug, unix.IFF_DEBUG},
		{veth.FlagLoopback, unix.IFF_LOOPBACK}, {veth.FlagPointToPoint, unix.IFF_POINTOPOINT},
		{veth.FlagNoTrailers, unix.IFF_NOTRAILERS}, {veth.FlagNoARP, unix.IFF_NOARP}, {veth.FlagPromisc, unix.IFF_PROMISC},
		{veth.FlagAllMulti, unix.IFF_ALLMULTI}, {veth.FlagMaster, unix.IFF_MASTER}, {veth.FlagSlave, unix.IFF_SLAVE},
		{veth.FlagMulticast, unix.IFF_MULTICAST}, {veth.FlagPortSel, unix.IFF_PORTSEL}, {veth.FlagAutoMedia, unix.IFF_AUTOMEDIA},
		{veth.FlagDynamic, unix.IFF_DYNAMIC}, {veth.FlagLowerUp, unix.IFF_LOWER_UP}, {veth.FlagDormant, unix.IFF_DORMANT},
		{veth.FlagEcho, unix.IFF_ECHO}, {veth.FlagRunning, unix.IFF_RUNNING},
	} {
		if int(c.got) != c.want {
			t.Errorf("%v = %#x, kernel %#x", c.got, uint32(c.got), c.want)
		}
	}
	if s := (veth.FlagBroadcast | veth.FlagMulticast | veth.FlagUp | veth.FlagLowerUp).String(); s != "BROADCAST,MULTICAST,UP,LOWER_UP" {
		t.Errorf("String = %q", s)
	}
}

// TestLinkTypesMatchKernel: so are the link types.
func TestLinkTypesMatchKernel(t *testing.T) {
	if veth.ARPHRDEther != unix.ARPHRD_ETHER || veth.ARPHRDLoopback != unix.ARPHRD_LOOPBACK || veth.ARPHRDNone != unix.ARPHRD_NONE {
		t.Error("ARPHRD_* constants differ from the kernel's")
	}
}
