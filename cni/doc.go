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
//	    "capabilities": {"portMappings": true, "ips": true, "mac": true}
//	  }]
//	}
//
// What one plugin does is what a chain of the reference ptp (with
// ipMasq), firewall and portmap plugins does: a veth pair per container,
// the container's address and default route, masquerade out of the host's
// uplink ("" for the default route's link), isolation between containers
// (allowSiblings lets them reach each other), published ports (the
// portMappings capability; a port without a host address is the host's on
// 127.0.0.1 too; the runtime reserves the host ports), the container's
// MAC (the mac capability, or MAC in CNI_ARGS). Addresses come from the IPAM plugin the
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
//
// # Installing
//
// On each node, next to the reference plugins:
//
//	GOBIN=/opt/cni/bin go install github.com/nsnet/nsnet/cni/nsnet-cni@latest
//	GOBIN=/opt/cni/bin go install github.com/containernetworking/plugins/plugins/ipam/host-local@v1.10.0
//
// and a network configuration in /etc/cni/net.d, such as
// cni/testdata/10-nsnet.conflist (the one the tests drive through libcni;
// dual stack, with host-local ranges 10.88.0.0/16 and fd00:88::/64).
// "cniVersion" must be one the runtime's libcni
// (github.com/containernetworking/cni in its go.mod) knows: "1.1.0" needs
// libcni v1.2.0 or later; "1.0.0" works with libcni v1.0 and v1.1 (podman
// 4 on its CNI backend has v1.1.2 and refuses "1.1.0"); "0.4.0" with
// anything older. The plugin answers in the version asked for.
//
//   - Kubernetes (containerd or CRI-O): give host-local the node's pod CIDR
//     ("ranges": [[{"subnet": "<node podCIDR>"}]], written per node by
//     your provisioning) and leave "uplink": "" (the default route's
//     link). Pods reach the outside through the node's address and are
//     isolated from each other unless "allowSiblings": true. Traffic
//     between nodes needs routes to each node's pod CIDR (as with ptp):
//     set "ipMasq": false where the network routes pod addresses.
//   - Nomad: the file in the CNI config directory (cni_config_dir,
//     /opt/cni/config by default) and network { mode = "cni/nsnet" };
//     Nomad passes portMappings from port blocks.
//   - podman (CNI backend) and nerdctl: the file in /etc/cni/net.d, then
//     --network nsnet.
//
// Other keys: "mtu", "allowForeignDrop" (see nat.Config), "ipMasq": false
// (forward with the containers' own addresses). DNS for containers stays
// the runtime's (the result carries the configuration's "dns"). The
// figures against ptp are in bench/README.md.
package cni
