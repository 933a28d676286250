// Package cni is a CNI plugin built on nsnet: the same links that
// nat.Connect makes, for container runtimes that call network plugins
// through the Container Network Interface (containerd and Kubernetes,
// CRI-O, Nomad, podman). The binary is nsnet-cni
// (go install github.com/nsnet/nsnet/cni/nsnet-cni@latest); put it in the
// runtime's plugin directory (/opt/cni/bin) and name it in a network
// configuration:
//
//	{
//	  "cniVersion": "1.1.0",
//	  "name": "mynet",
//	  "plugins": [{
//	    "type": "nsnet-cni",
//	    "uplink": "",
//	    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.22.0.0/16"}]]},
//	    "capabilities": {"portMappings": true, "ips": true}
//	  }]
//	}
//
// What one plugin does is what a chain of the reference ptp (with
// ipMasq), firewall and portmap plugins does: a veth pair per container,
// the container's address and default route, masquerade out of the host's
// uplink ("" for the default route's link), isolation between containers
// (allowSiblings lets them reach each other), published ports (the
// portMappings capability). Addresses come from the IPAM plugin the
// configuration names, as with every CNI plugin; many containers share
// one subnet, point to point: each gets its address as a /32 (/128) with
// the IPAM gateway as its peer, and every host end has that gateway
// address (see nat.Config.HostAddr). Links are nat's persistent links
// (nat.Config.Persistent): the plugin exits after each command, DEL and GC
// remove them with nat.Remove.
//
// Commands: ADD, DEL (idempotent: a missing container, namespace or link
// is no error), CHECK (what ADD made is there and unchanged), GC (removes
// every attachment of the network not in cni.dev/valid-attachments, and
// nothing else), STATUS, VERSION; spec versions 0.4.0 to 1.1.0. Errors are
// CNI error objects (code 7 for a configuration nsnet refuses, 8 for a
// namespace it cannot open, 999 otherwise) with nsnet's message.
package cni
