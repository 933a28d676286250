package veth

// Link types, for the test that checks them against x/sys/unix.
const (
	ARPHRDEther    = arphrdEther
	ARPHRDLoopback = arphrdLoopback
	ARPHRDNone     = arphrdNone
)
