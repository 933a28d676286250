//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nat/network"
)

func lsMain(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("ls", "", `Lists every link nsnet made in this host namespace, by any process (nsnet
run, a test, a container runtime through nsnet-cni): its host end, owner
and whether the owner still runs (dead: "nsnet sweep" removes the link),
the namespace at its other end, its prefixes, uplink and published ports,
and the tag of a persistent link. A network's bridge (nat/network) is one
link, "(network)"; its members are listed after the links, then the named
namespaces that a killed "nsnet run" left.`, stdout, stderr)
	asJSON := fs.Bool("json", false, "print JSON (an array of objects, one per link)")
	if code, ok := fs.parse(args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nsnet ls: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	links, err := nat.Links(nil)
	if err != nil {
		fmt.Fprintln(stderr, "nsnet ls:", err)
		return 1
	}
	nets, err := network.List(nil)
	if err != nil {
		fmt.Fprintln(stderr, "nsnet ls:", err)
		return 1
	}
	bridges := map[int]bool{}
	for _, n := range nets {
		bridges[n.Index] = true
	}
	runs, err := listRuns()
	if err != nil {
		fmt.Fprintln(stderr, "nsnet ls:", err)
		return 1
	}
	if *asJSON {
		out := struct {
			Links      []jsonLink   `json:"links"`
			Members    []jsonMember `json:"members"`
			Namespaces []runNS      `json:"namespaces"`
		}{Links: []jsonLink{}, Members: []jsonMember{}, Namespaces: runs}
		for _, l := range links {
			j := toJSON(l)
			j.Network = bridges[l.Index]
			out.Links = append(out.Links, j)
		}
		for _, n := range nets {
			for _, m := range n.Members {
				out.Members = append(out.Members, memberJSON(n, m))
			}
		}
		if out.Namespaces == nil {
			out.Namespaces = []runNS{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			fmt.Fprintln(stderr, "nsnet ls:", err)
			return 1
		}
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST END\tINDEX\tOWNER\tPID\tSTATE\tNAMESPACE\tUPLINK\tPREFIXES\tPORTS\tTAG")
	for _, l := range links {
		j := toJSON(l)
		if bridges[l.Index] {
			j.Namespace = "(network)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(j.HostVeth), j.Index, j.Owner, j.PID, j.State,
			dash(j.Namespace), dash(j.Uplink), dash(strings.Join(j.Prefixes, ",")), dash(strings.Join(j.Ports, ",")), dash(j.Tag))
	}
	tw.Flush()
	if len(nets) > 0 {
		fmt.Fprintln(stdout)
		tw = tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "NETWORK\tMEMBER\tNAME\tNAMESPACE\tADDRESSES\tMAC")
		for _, n := range nets {
			for _, m := range n.Members {
				j := memberJSON(n, m)
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.Network, j.HostVeth, dash(j.Name), dash(j.Namespace), dash(strings.Join(j.Addrs, ",")), j.MAC)
			}
		}
		tw.Flush()
	}
	if len(runs) > 0 {
		fmt.Fprintln(stdout)
		tw = tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "NAMESPACE\tMADE BY\tPID\tSTATE")
		for _, r := range runs {
			fmt.Fprintf(tw, "%s\tnsnet run\t%d\t%s\n", r.Name, r.PID, r.State)
		}
		tw.Flush()
	}
	return 0
}

// jsonLink is a nat.LinkInfo as ls prints it.
type jsonLink struct {
	HostVeth   string   `json:"host_end"`
	Index      int      `json:"index"`
	Owner      string   `json:"owner"`
	PID        int      `json:"pid"`
	State      string   `json:"state"` // "alive", "dead" or "persistent"
	Persistent bool     `json:"persistent"`
	Tag        string   `json:"tag,omitempty"`
	Namespace  string   `json:"namespace"`
	Uplink     string   `json:"uplink"`
	Prefixes   []string `json:"prefixes"`
	Ports      []string `json:"ports"`
	Network    bool     `json:"network,omitempty"` // the bridge of a network (its members are in "members")
}

// jsonMember is a member of a network as ls prints it.
type jsonMember struct {
	Network   string   `json:"network"` // its bridge
	HostVeth  string   `json:"host_end"`
	Index     int      `json:"index"`
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	Addrs     []string `json:"addresses"`
	MAC       string   `json:"mac"`
}

func memberJSON(n network.Info, m network.MemberInfo) jsonMember {
	j := jsonMember{Network: n.HostVeth, HostVeth: m.HostVeth, Index: m.Index, Name: m.Name, Namespace: m.Namespace, Addrs: []string{}, MAC: m.MAC.String()}
	for _, a := range []netip.Addr{m.Addr, m.Addr6} {
		if a.IsValid() {
			j.Addrs = append(j.Addrs, a.String())
		}
	}
	return j
}

func toJSON(l nat.LinkInfo) jsonLink {
	j := jsonLink{HostVeth: l.HostVeth, Index: l.Index, Owner: l.Owner, PID: l.PID, Persistent: l.Persistent,
		Tag: l.Tag, Namespace: l.Namespace, Uplink: l.Uplink, Prefixes: []string{}, Ports: []string{}}
	switch {
	case l.Persistent:
		j.State = "persistent"
	case l.Alive:
		j.State = "alive"
	default:
		j.State = "dead"
	}
	for _, p := range []netip.Prefix{l.Prefix, l.Prefix6} {
		if p.IsValid() {
			j.Prefixes = append(j.Prefixes, p.String())
		}
	}
	for _, p := range l.Ports {
		j.Ports = append(j.Ports, portString(p))
	}
	return j
}

// portString writes a published port as docker ps does: 203.0.113.2:8080->80/tcp.
func portString(p nat.Port) string {
	ns := p.NSPort
	if ns == 0 {
		ns = p.HostPort
	}
	return fmt.Sprintf("%s->%d/%s", netip.AddrPortFrom(p.HostAddr, p.HostPort), ns, strings.ToLower(p.Protocol))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sweepMain(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("sweep", "", `Removes what nsnet processes that died without closing their links (killed,
crashed) left in this host namespace: their links, set entries, uplink
forwarding, DNS files and DOCKER-USER rules (what nat.Sweep does), and the
named namespaces of killed "nsnet run" commands. Links of live processes
and persistent links are left alone. Prints what it removed.`, stdout, stderr)
	quiet := fs.Bool("q", false, "print nothing")
	if code, ok := fs.parse(args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nsnet sweep: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	res, names, err := sweepAll()
	if !*quiet {
		printSweep(stdout, res, names)
	}
	if err != nil {
		fmt.Fprintln(stderr, "nsnet sweep:", err)
		return 1
	}
	return 0
}

// sweepAll sweeps nat's leftovers, then the named namespaces of dead runs.
func sweepAll() (nat.SweepResult, []string, error) {
	res, err := nat.Sweep(nil)
	if err != nil {
		return res, nil, err
	}
	names, err := sweepRuns()
	return res, names, err
}

func printSweep(w io.Writer, res nat.SweepResult, names []string) {
	for _, l := range res.Links {
		fmt.Fprintf(w, "removed link %s\n", l)
	}
	for _, u := range res.Uplinks {
		fmt.Fprintf(w, "turned forwarding off again on %s\n", u)
	}
	for _, n := range names {
		fmt.Fprintf(w, "removed namespace %s\n", n)
	}
	fmt.Fprintf(w, "%d links, %d set entries, %d resolv.conf files, %d DOCKER-USER rules, %d namespaces removed",
		len(res.Links), res.Elements, res.ResolvConfs, res.DockerUser, len(names))
	if res.Table {
		fmt.Fprint(w, "; the table inet nsnet too (no owner left)")
	}
	fmt.Fprintln(w)
}
