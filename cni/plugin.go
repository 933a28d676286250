package cni

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/nsnet/nsnet/addr"
	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/route"
	"github.com/nsnet/nsnet/veth"
)

// Versions are the CNI spec versions the plugin speaks.
var Versions = version.PluginSupports("0.4.0", "1.0.0", "1.1.0")

// Main runs the plugin: the command and its arguments come from the
// environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, ...)
// and the network configuration from standard input; the result or a CNI
// error object goes to standard output, and an error exits with status 1.
func Main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: Add, Del: Del, Check: Check, GC: GC, Status: Status}, Versions,
		"CNI plugin nsnet-cni: nsnet's links (veth, NAT, isolation) for container runtimes")
}

// Conf is the plugin's network configuration: the standard fields, and
// nsnet's.
type Conf struct {
	types.PluginConf
	// Uplink is the host link the containers' traffic leaves by; "" for
	// the link of the host's default route.
	Uplink string `json:"uplink,omitempty"`
	// MTU of the veth pairs; 0 for the kernel's default.
	MTU int `json:"mtu,omitempty"`
	// AllowSiblings lets the network's containers reach each other (and
	// other nsnet links that allow it); by default each is isolated.
	AllowSiblings bool `json:"allowSiblings,omitempty"`
	// IPMasq, true if absent, masquerades the containers' traffic out of
	// the uplink's address; false forwards it with the containers' own
	// addresses, for a subnet the outside routes to the host.
	IPMasq *bool `json:"ipMasq,omitempty"`
	// AllowForeignDrop: see nat.Config.AllowForeignDrop.
	AllowForeignDrop bool `json:"allowForeignDrop,omitempty"`
	// RuntimeConfig holds what the runtime passes for the capabilities
	// the configuration declares.
	RuntimeConfig struct {
		PortMappings []PortMapping `json:"portMappings,omitempty"`
		MAC          string        `json:"mac,omitempty"` // the mac capability
	} `json:"runtimeConfig,omitempty"`
}

// PortMapping is one entry of the portMappings capability.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// parseConf reads the configuration and its previous result, if any.
func parseConf(stdin []byte) (*Conf, error) {
	var c Conf
	if err := json.Unmarshal(stdin, &c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "nsnet-cni: cannot read the network configuration", err.Error())
	}
	if err := version.ParsePrevResult(&c.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "nsnet-cni: cannot read prevResult", err.Error())
	}
	switch {
	case c.Name == "":
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "nsnet-cni: the network configuration has no name", "")
	case c.IPAM.Type == "":
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "nsnet-cni: the network configuration has no ipam type (host-local, say)", "")
	case c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535):
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("nsnet-cni: mtu %d outside 576..65535", c.MTU), "")
	}
	return &c, nil
}

// hostVeth is the host end's name for an attachment: "nsc" and 12
// characters of a hash of the network, the container and the interface,
// so that DEL and GC find it again without a record of their own.
func hostVeth(network, containerID, ifName string) string {
	h := sha256.Sum256([]byte(network + "\x00" + containerID + "\x00" + ifName))
	return "nsc" + hex.EncodeToString(h[:6])
}

// tag is what the network's links carry (nat.Config.Tag), for GC.
func tag(network string) string { return "cni net=" + network }

// Add is CNI ADD: addresses from the IPAM plugin, then the link.
func Add(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	ctx := context.Background()
	ipamRes, err := invoke.DelegateAdd(ctx, c.IPAM.Type, args.StdinData, nil)
	if err != nil {
		return err // the IPAM plugin's own error object
	}
	res, err := current.NewResultFromResult(ipamRes)
	if err == nil {
		err = add(ctx, c, args, res)
	}
	if err != nil {
		invoke.DelegateDel(ctx, c.IPAM.Type, args.StdinData, nil)
		return err
	}
	return types.PrintResult(res, c.CNIVersion)
}

func add(ctx context.Context, c *Conf, args *skel.CmdArgs, res *current.Result) error {
	name := hostVeth(c.Name, args.ContainerID, args.IfName)
	cfg := nat.Config{Persistent: true, Tag: tag(c.Name), HostVeth: name, NSVeth: args.IfName, MTU: c.MTU,
		AllowSiblings: c.AllowSiblings, AllowForeignDrop: c.AllowForeignDrop, DNS: nat.DNSNone,
		// The runtime reserves host ports (podman holds them bound in
		// conmon: at a reload they are, and must not be refused).
		PortsReserved: true}
	masq := c.IPMasq == nil || *c.IPMasq
	cfg.RoutedIPv4, cfg.RoutedIPv6 = !masq, !masq
	var cidr netip.Prefix
	var gw4, gw6 bool
	for _, ipc := range res.IPs {
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		gw, gok := netip.AddrFromSlice(ipc.Gateway)
		if !ok {
			return types.NewError(types.ErrInvalidNetworkConfig, "nsnet-cni: the IPAM plugin gave an unreadable address", ipc.Address.String())
		}
		if !gok {
			return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("nsnet-cni: the IPAM plugin gave %v no gateway (the host end's address)", ipc.Address.String()), "")
		}
		a, gw = a.Unmap(), gw.Unmap()
		switch {
		case a.Is4() && !gw4:
			cidr, cfg.HostAddr, gw4 = netip.PrefixFrom(a, 32), gw, true
		case a.Is6() && !gw6:
			cfg.Prefix6, cfg.HostAddr6, gw6 = netip.PrefixFrom(a, 128), gw, true
		default:
			return types.NewError(types.ErrInvalidNetworkConfig, "nsnet-cni: one address per family (the IPAM plugin gave two)", ipc.Address.String())
		}
	}
	if !gw4 && !gw6 {
		return types.NewError(types.ErrInvalidNetworkConfig, "nsnet-cni: the IPAM plugin gave no address", "")
	}
	for _, pm := range c.RuntimeConfig.PortMappings {
		p, err := natPort(pm)
		if err != nil {
			return err
		}
		cfg.Ports = append(cfg.Ports, p)
	}
	mac, err := containerMAC(c, args.Args)
	if err != nil {
		return err
	}
	cfg.NSMAC = mac
	ns, err := netns.OpenPath(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, "nsnet-cni: cannot open the container's network namespace", err.Error())
	}
	defer ns.Close()
	if _, err := cfg.ConnectContext(ctx, ns, c.Uplink, cidr); err != nil {
		return cniError(err)
	}
	hostLink, err := veth.Lookup(nil, name)
	if err != nil {
		nat.Remove(nil, name)
		return cniError(err)
	}
	nsLink, err := veth.Lookup(ns, args.IfName)
	if err != nil {
		nat.Remove(nil, name)
		return cniError(err)
	}
	res.Interfaces = []*current.Interface{
		{Name: name, Mac: hostLink.HardwareAddr.String()},
		{Name: args.IfName, Mac: nsLink.HardwareAddr.String(), Sandbox: args.Netns},
	}
	res.Routes = nil
	for _, ipc := range res.IPs {
		// What the interface holds: the address alone (point to point,
		// the gateway its peer), not the IPAM subnet's length.
		bits := 128
		if ip4 := ipc.Address.IP.To4(); ip4 != nil {
			ipc.Address.IP, bits = ip4, 32
		}
		ipc.Address.Mask = net.CIDRMask(bits, bits)
		ipc.Interface = current.Int(1)
		dst := net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
		if ipc.Address.IP.To4() == nil {
			dst = net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		res.Routes = append(res.Routes, &types.Route{Dst: dst, GW: ipc.Gateway})
	}
	res.DNS = c.DNS
	if c.PrevResult != nil {
		// Chained after another plugin: its interfaces, addresses and
		// routes first, then this link's.
		prev, err := current.NewResultFromResult(c.PrevResult)
		if err != nil {
			nat.Remove(nil, name)
			return types.NewError(types.ErrDecodingFailure, "nsnet-cni: cannot convert prevResult", err.Error())
		}
		n := len(prev.Interfaces)
		for _, ipc := range res.IPs {
			ipc.Interface = current.Int(n + 1)
		}
		res.Interfaces = append(prev.Interfaces, res.Interfaces...)
		res.IPs = append(prev.IPs, res.IPs...)
		res.Routes = append(prev.Routes, res.Routes...)
	}
	return nil
}

// containerMAC is the hardware address the runtime asks for: the mac
// capability's, else MAC in CNI_ARGS (podman passes a container's former
// one at a network reload), as the reference plugins read them; nil for
// none.
func containerMAC(c *Conf, cniArgs string) (net.HardwareAddr, error) {
	mac := c.RuntimeConfig.MAC
	if mac == "" {
		for _, kv := range strings.Split(cniArgs, ";") {
			if k, v, ok := strings.Cut(kv, "="); ok && k == "MAC" {
				mac = v
			}
		}
	}
	if mac == "" {
		return nil, nil
	}
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("nsnet-cni: MAC %q is not an Ethernet address", mac), "")
	}
	return hw, nil
}

// natPort converts a portMappings entry.
func natPort(pm PortMapping) (nat.Port, error) {
	p := nat.Port{Protocol: strings.ToLower(pm.Protocol)}
	if p.Protocol == "" {
		p.Protocol = "tcp"
	}
	if pm.HostPort < 1 || pm.HostPort > 65535 || pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
		return p, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("nsnet-cni: port mapping %d -> %d outside 1..65535", pm.HostPort, pm.ContainerPort), "")
	}
	p.HostPort, p.NSPort = uint16(pm.HostPort), uint16(pm.ContainerPort)
	if pm.HostIP != "" && pm.HostIP != "0.0.0.0" {
		a, err := netip.ParseAddr(pm.HostIP)
		if err != nil {
			return p, types.NewError(types.ErrInvalidNetworkConfig, "nsnet-cni: port mapping hostIP", err.Error())
		}
		p.HostAddr = a
	}
	return p, nil
}

// cniError is nsnet's error as a CNI error object.
func cniError(err error) error {
	var te *types.Error
	switch {
	case errors.As(err, &te):
		return te
	case errors.Is(err, nat.ErrInvalidConfig), errors.Is(err, nat.ErrOverlap), errors.Is(err, nat.ErrForeignDrop),
		errors.Is(err, nat.ErrForeignTable), errors.Is(err, nat.ErrInvalidName), errors.Is(err, nat.ErrNoIPv6Forwarding):
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	case errors.Is(err, netns.ErrClosed):
		return types.NewError(types.ErrInvalidNetNS, err.Error(), "")
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}

// Del is CNI DEL: the link (wherever it is: its namespace may be gone)
// and the addresses. Nothing there is no error.
func Del(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var errs []error
	if err := nat.RemoveContext(ctx, nil, hostVeth(c.Name, args.ContainerID, args.IfName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := invoke.DelegateDel(ctx, c.IPAM.Type, args.StdinData, nil); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return cniError(errors.Join(errs...))
	}
	return nil
}

// Check is CNI CHECK: the IPAM plugin's check, then that the link ADD
// made is there as it was made: the host end, the container's interface
// with the result's addresses, its default routes via the gateways.
func Check(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if c.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "nsnet-cni: CHECK needs prevResult", "")
	}
	prev, err := current.NewResultFromResult(c.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "nsnet-cni: cannot convert prevResult", err.Error())
	}
	ctx := context.Background()
	if err := invoke.DelegateCheck(ctx, c.IPAM.Type, args.StdinData, nil); err != nil {
		return err
	}
	name := hostVeth(c.Name, args.ContainerID, args.IfName)
	drift := func(format string, a ...any) error {
		return types.NewError(types.ErrInternal, "nsnet-cni: "+fmt.Sprintf(format, a...), "")
	}
	pls, err := nat.PersistentLinks(nil)
	if err != nil {
		return cniError(err)
	}
	found := false
	for _, pl := range pls {
		if pl.HostVeth == name {
			found = pl.Up
		}
	}
	if !found {
		return drift("the host end %s of container %s is missing", name, args.ContainerID)
	}
	ns, err := netns.OpenPath(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, "nsnet-cni: cannot open the container's network namespace", err.Error())
	}
	defer ns.Close()
	link, err := veth.Lookup(ns, args.IfName)
	if err != nil {
		return drift("interface %s: %v", args.IfName, err)
	}
	for _, i := range prev.Interfaces {
		if i.Name == args.IfName && i.Sandbox != "" && i.Mac != "" && i.Mac != link.HardwareAddr.String() {
			return drift("interface %s has MAC %s, not %s", args.IfName, link.HardwareAddr, i.Mac)
		}
	}
	addrs, err := addrsOf(ns, args.IfName)
	if err != nil {
		return drift("addresses of %s: %v", args.IfName, err)
	}
	routes, err := route.List(ns, nil)
	if err != nil {
		return drift("routes: %v", err)
	}
	for _, ipc := range prev.IPs {
		if ipc.Interface == nil || *ipc.Interface < 0 || *ipc.Interface >= len(prev.Interfaces) ||
			prev.Interfaces[*ipc.Interface].Name != args.IfName || prev.Interfaces[*ipc.Interface].Sandbox == "" {
			continue // another plugin's (chained before this one)
		}
		a, _ := netip.AddrFromSlice(ipc.Address.IP)
		gw, _ := netip.AddrFromSlice(ipc.Gateway)
		a, gw = a.Unmap(), gw.Unmap()
		if !addrs[a] {
			return drift("interface %s lacks its address %v", args.IfName, a)
		}
		ok := false
		for _, r := range routes {
			ok = ok || (r.Dst.Bits() == 0 && r.Dst.Addr().Is4() == a.Is4() && r.Gateway == gw && r.LinkIndex == link.Index)
		}
		if !ok {
			return drift("no default route via %v on %s", gw, args.IfName)
		}
	}
	return nil
}

// GC is CNI GC: every link of this network whose attachment is not in
// cni.dev/valid-attachments goes (and nothing of other networks or of
// nsnet's other users), then the IPAM plugin's GC.
func GC(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	valid := map[string]bool{}
	for _, a := range c.ValidAttachments {
		valid[hostVeth(c.Name, a.ContainerID, a.IfName)] = true
	}
	pls, err := nat.PersistentLinks(nil)
	if err != nil {
		return cniError(err)
	}
	ctx := context.Background()
	var errs []error
	for _, pl := range pls {
		if pl.Tag == tag(c.Name) && !valid[pl.HostVeth] {
			if err := nat.RemoveContext(ctx, nil, pl.HostVeth); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if err := invoke.DelegateGC(ctx, c.IPAM.Type, args.StdinData, nil); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return cniError(errors.Join(errs...))
	}
	return nil
}

// Status is CNI STATUS: ready when the library's table and links can be
// read (nftables and netlink work, the privileges are there) and the IPAM
// plugin is ready.
func Status(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if _, err := nat.PersistentLinks(nil); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "nsnet-cni: not ready: "+err.Error(), "")
	}
	return invoke.DelegateStatus(context.Background(), c.IPAM.Type, args.StdinData, nil)
}

// addrsOf is the set of addresses of the link called name in ns.
func addrsOf(ns *netns.Handle, name string) (map[netip.Addr]bool, error) {
	as, err := addr.List(ns, name)
	if err != nil {
		return nil, err
	}
	m := map[netip.Addr]bool{}
	for _, a := range as {
		m[a.Prefix.Addr()] = true
	}
	return m, nil
}
