//go:build linux

package main

// -cni: nsnet-cni against the reference ptp plugin with ipMasq
// (containernetworking/plugins v1.10.0), both driven through libcni as
// containerd drives them, with host-local, side by side in one run.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/google/nftables"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// cniPlugins makes a directory with nsnet-cni (built from this module)
// and the reference plugins of $NSNET_CNI_PLUGINS.
func cniPlugins() string {
	ref := os.Getenv("NSNET_CNI_PLUGINS")
	if ref == "" {
		ref = "/opt/cni/bin"
	}
	dir, err := os.MkdirTemp("", "nsnet-cni-bench")
	check(err)
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "nsnet-cni"), "github.com/nsnet/nsnet/cni/nsnet-cni").CombinedOutput()
	if err != nil {
		check(fmt.Errorf("go build nsnet-cni: %v\n%s", err, out))
	}
	for _, p := range []string{"host-local", "ptp"} {
		if _, err := os.Stat(filepath.Join(ref, p)); err != nil {
			check(fmt.Errorf("%s not in %s (set NSNET_CNI_PLUGINS): %w", p, ref, err))
		}
		check(os.Symlink(filepath.Join(ref, p), filepath.Join(dir, p)))
	}
	return dir
}

// cniList is a one-plugin network of type typ (nsnet-cni or ptp) with
// host-local on subnet.
func cniList(typ, subnet, dataDir, uplink string) *libcni.NetworkConfigList {
	p := map[string]any{"type": typ, "ipam": map[string]any{"type": "host-local", "subnet": subnet, "dataDir": dataDir}}
	if typ == "ptp" {
		p["ipMasq"] = true
	} else {
		p["uplink"] = uplink
	}
	b, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "bench-" + typ, "plugins": []any{p}})
	l, err := libcni.ConfListFromBytes(b)
	check(err)
	return l
}

// cniRun adds n containers to the network, then deletes them, and returns
// the median ADD and DEL times and the ruleset's rules with the n live.
func cniRun(dir, typ, subnet, uplink string, n int) (add, del float64, rules int) {
	data, err := os.MkdirTemp("", "bench-ipam")
	check(err)
	defer os.RemoveAll(data)
	cache, err := os.MkdirTemp("", "bench-cache")
	check(err)
	defer os.RemoveAll(cache)
	cni := libcni.NewCNIConfigWithCacheDir([]string{dir}, cache, nil)
	list := cniList(typ, subnet, data, uplink)
	var nss []*netns.Handle
	var adds, dels []float64
	rt := func(i int) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: fmt.Sprintf("bench%d", i), NetNS: filepath.Join(netns.Dir, fmt.Sprintf("cb-%d", i)), IfName: "eth0"}
	}
	for i := range n {
		ns, err := netns.New(fmt.Sprintf("cb-%d", i))
		check(err)
		nss = append(nss, ns)
		t0 := time.Now()
		_, err = cni.AddNetworkList(context.Background(), list, rt(i))
		adds = append(adds, ms(time.Since(t0)))
		check(err)
	}
	rules = allRules()
	for i := range n {
		t0 := time.Now()
		check(cni.DelNetworkList(context.Background(), list, rt(i)))
		dels = append(dels, ms(time.Since(t0)))
	}
	for i, ns := range nss {
		ns.Close()
		check(netns.Delete(fmt.Sprintf("cb-%d", i)))
	}
	return median(adds), median(dels), rules
}

// allRules counts the rules of every nftables table (ptp's iptables-nft
// rules included).
func allRules() int {
	c, err := nftables.New()
	check(err)
	chains, err := c.ListChains()
	check(err)
	n := 0
	for _, ch := range chains {
		rs, err := c.GetRules(ch.Table, ch)
		check(err)
		n += len(rs)
	}
	return n
}

// cniBench prints the table for each N.
func cniBench(w *nstest.World, ns []int) {
	dir := cniPlugins()
	defer os.RemoveAll(dir)
	fmt.Println("| N | ptp ADD | nsnet-cni ADD | ratio | ptp DEL | nsnet-cni DEL | ratio | rules ptp / nsnet-cni |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, n := range ns {
		pa, pd, pr := cniRun(dir, "ptp", "10.89.0.0/16", "", n)
		settle()
		na, nd, nr := cniRun(dir, "nsnet-cni", "10.88.0.0/16", w.Uplink, n)
		settle()
		fmt.Printf("| %d | %.2f ms | %.2f ms | %.1f× | %.2f ms | %.2f ms | %.1f× | %d / %d |\n", n, pa, na, pa/na, pd, nd, pd/nd, pr, nr)
	}
	fmt.Println("\nper container, medians; ADD and DEL through libcni (AddNetworkList / DelNetworkList) with host-local;")
	fmt.Println("ptp with ipMasq (containernetworking/plugins v1.10.0); rules: every nftables rule with the N containers live.")
}
