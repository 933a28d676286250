package cni_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
)

// TestMain finds the reference CNI plugins, or builds them (go install of
// containernetworking/plugins v1.10.0 into the user's cache directory,
// once: the private world where the tests run has no network), then runs
// the tests.
func TestMain(m *testing.M) {
	if nstest.Outside() {
		// For TestOlderLibcni, which builds with it inside the private
		// world (no network there).
		if out, err := exec.Command("go", "mod", "download", "github.com/containernetworking/cni@"+olderLibcni).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "cni tests: go mod download libcni %s: %v: %s\n", olderLibcni, err, out)
		}
	}
	if nstest.Outside() && os.Getenv("NSNET_CNI_PLUGINS") == "" && !hasPlugins("/opt/cni/bin") {
		if dir, err := cachedPlugins(); err == nil {
			os.Setenv("NSNET_CNI_PLUGINS", dir)
		} else {
			fmt.Fprintf(os.Stderr, "cni tests: no reference CNI plugins in /opt/cni/bin, and building them failed: %v\n", err)
		}
	}
	nstest.Main(m)
}

// pluginsVersion is the containernetworking/plugins release the tests
// run with (as .ci/run installs it).
const pluginsVersion = "v1.10.0"

// hasPlugins reports whether dir holds the reference plugins the tests use.
func hasPlugins(dir string) bool {
	for _, p := range []string{"host-local", "tuning", "ptp", "loopback"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			return false
		}
	}
	return true
}

// cachedPlugins returns a directory with the reference plugins, built
// there with go install the first time.
func cachedPlugins() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "nsnet", "cni-plugins-"+pluginsVersion)
	if hasPlugins(dir) {
		return dir, nil
	}
	args := []string{"install"}
	for _, p := range []string{"ipam/host-local", "meta/tuning", "main/ptp", "main/loopback"} {
		args = append(args, "github.com/containernetworking/plugins/plugins/"+p+"@"+pluginsVersion)
	}
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install: %v: %s", err, out)
	}
	return dir, nil
}

func netipPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// pluginDir builds nsnet-cni into a directory with the reference plugins
// (host-local, tuning, ptp) from $NSNET_CNI_PLUGINS, which .ci/run fills
// with go install of containernetworking/plugins v1.10.0.
func pluginDir(t *testing.T) string {
	t.Helper()
	nstest.Require(t)
	ref := os.Getenv("NSNET_CNI_PLUGINS")
	if ref == "" {
		ref = "/opt/cni/bin"
	}
	if !hasPlugins(ref) {
		nstest.MissingTool(t, "no reference CNI plugins in %s (host-local, tuning, ptp, loopback): set NSNET_CNI_PLUGINS to their directory, "+
			"or let the tests build them (go install, which needs the module proxy)", ref)
	}
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "nsnet-cni"), "github.com/nsnet/nsnet/cni/nsnet-cni").CombinedOutput()
	if err != nil {
		t.Fatalf("go build nsnet-cni: %v\n%s", err, out)
	}
	for _, p := range []string{"host-local", "tuning", "ptp", "loopback"} {
		if err := os.Symlink(filepath.Join(ref, p), filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// confList is the sample network configuration (testdata, the README's)
// for the world: uplink up0, host-local's leases in a temporary directory,
// and with more plugins chained after nsnet-cni.
func confList(t *testing.T, cniVersion string, chained ...map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	b, err := os.ReadFile("testdata/10-nsnet.conflist")
	if err != nil {
		t.Fatal(err)
	}
	var list map[string]any
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	list["cniVersion"] = cniVersion
	plugins := list["plugins"].([]any)
	p := plugins[0].(map[string]any)
	p["uplink"] = "up0"
	p["ipam"].(map[string]any)["dataDir"] = t.TempDir()
	for _, c := range chained {
		if c["type"] == "tuning" {
			// tuning keeps each interface's former settings there (its
			// default, /run/cni/tuning, is root's alone on a host).
			c["dataDir"] = t.TempDir()
		}
		plugins = append(plugins, c)
	}
	list["plugins"] = plugins
	b, _ = json.Marshal(list)
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// runtime is libcni as a container runtime drives it, run from the
// world's host namespace (the plugins it starts inherit it).
type runtime struct {
	t    *testing.T
	w    *nstest.World
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
}

func newRuntime(t *testing.T, w *nstest.World, list *libcni.NetworkConfigList) *runtime {
	// The executor given, as runtimes do: libcni makes one lazily
	// otherwise, unsafely for calls in parallel (the race detector says).
	ex := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	return &runtime{t: t, w: w, cni: libcni.NewCNIConfigWithCacheDir([]string{pluginDir(t)}, t.TempDir(), ex), list: list}
}

func (r *runtime) rt(id string, caps map[string]any) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: filepath.Join(netns.Dir, id), IfName: "eth0", CapabilityArgs: caps}
	if mac, ok := caps["CNI_ARGS MAC"]; ok {
		// CNI_ARGS, as podman passes a container's MAC at a reload.
		rt.Args = [][2]string{{"IgnoreUnknown", "1"}, {"MAC", mac.(string)}}
		delete(caps, "CNI_ARGS MAC")
	}
	return rt
}

func (r *runtime) do(f func() error) error {
	var err error
	if derr := r.w.Host.Do(func() error { err = f(); return nil }); derr != nil {
		return derr
	}
	return err
}

func (r *runtime) add(id string, caps map[string]any) *current.Result {
	r.t.Helper()
	var res types.Result
	err := r.do(func() (err error) {
		res, err = r.cni.AddNetworkList(context.Background(), r.list, r.rt(id, caps))
		return err
	})
	if err != nil {
		r.t.Fatalf("ADD %s: %v", id, err)
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		r.t.Fatal(err)
	}
	return cur
}

func (r *runtime) check(id string) error {
	return r.do(func() error { return r.cni.CheckNetworkList(context.Background(), r.list, r.rt(id, nil)) })
}

func (r *runtime) del(id string) error {
	return r.do(func() error { return r.cni.DelNetworkList(context.Background(), r.list, r.rt(id, nil)) })
}

func (r *runtime) gc(valid ...string) error {
	var args libcni.GCArgs
	for _, id := range valid {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: id, IfName: "eth0"})
	}
	return r.do(func() error { return r.cni.GCNetworkList(context.Background(), r.list, &args) })
}

// hostState is how the host reads, for "left as before".
func hostState(t *testing.T, w *nstest.World) string {
	t.Helper()
	in := func(args ...string) string {
		return nstest.Cmd(t, "ip", append([]string{"netns", "exec", w.HostName}, args...)...)
	}
	return nstest.Steady(strings.Join([]string{
		in("ip", "-d", "link"), in("ip", "addr"), in("ip", "route", "show", "table", "all"),
		in("ip", "-6", "route", "show", "table", "all"), in("nft", "list", "ruleset"),
		in("sh", "-c", "grep . /proc/sys/net/ipv4/conf/*/forwarding /proc/sys/net/ipv6/conf/*/force_forwarding"),
	}, "\n---\n"))
}

// addrOf is the result's address of family v4 (or IPv6), without its length.
func addrOf(res *current.Result, v4 bool) string {
	for _, ipc := range res.IPs {
		if (ipc.Address.IP.To4() != nil) == v4 {
			return ipc.Address.IP.String()
		}
	}
	return ""
}

// resultAgrees checks that res says what the container's interfaces hold:
// every address of an interface in the namespace nsName (a Sandbox one),
// with its length, is one `ip -j addr` lists on it, and every address
// (but link-local ones) listed on the interfaces res names is in res.
func resultAgrees(t *testing.T, res *current.Result, nsName string) {
	t.Helper()
	var links []struct {
		IfName   string `json:"ifname"`
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
			Scope     string `json:"scope"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(nstest.Cmd(t, "ip", "-j", "-n", nsName, "addr")), &links); err != nil {
		t.Fatal(err)
	}
	held := map[string]bool{} // "ifname addr/len"
	for _, l := range links {
		for _, a := range l.AddrInfo {
			if a.Scope != "link" {
				held[fmt.Sprintf("%s %s/%d", l.IfName, a.Local, a.PrefixLen)] = true
			}
		}
	}
	named := map[string]bool{}
	for _, i := range res.Interfaces {
		if i.Sandbox != "" {
			named[i.Name] = true
		}
	}
	said := map[string]bool{}
	for _, ipc := range res.IPs {
		if ipc.Interface == nil || *ipc.Interface < 0 || *ipc.Interface >= len(res.Interfaces) || res.Interfaces[*ipc.Interface].Sandbox == "" {
			t.Errorf("result address %v names no interface of the container", ipc.Address.String())
			continue
		}
		ones, _ := ipc.Address.Mask.Size()
		k := fmt.Sprintf("%s %s/%d", res.Interfaces[*ipc.Interface].Name, ipc.Address.IP, ones)
		said[k] = true
		if !held[k] {
			t.Errorf("the result says %s; the namespace holds %v", k, held)
		}
	}
	for k := range held {
		if ifname, _, _ := strings.Cut(k, " "); named[ifname] && !said[k] {
			t.Errorf("the namespace holds %s; the result does not say it: %v", k, res.IPs)
		}
	}
}

// TestLibcni drives the built plugin through libcni, as containerd,
// CRI-O and Nomad do, with host-local: two containers get addresses of
// one subnet in both families and reach the outside through the NAT, seen
// from the uplink's addresses; they cannot reach each other; CHECK passes,
// and fails clearly once an address is gone; DEL (twice, and with the
// namespace gone) succeeds; GC removes what is not in its valid list and
// nothing else (not a link of another nsnet user); STATUS is ready; the
// host reads as before at the end.
func TestLibcni(t *testing.T) {
	w := nstest.NewWorld(t, "cni-")
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	nstest.Listen(t, w.Inet, "[2001:db8::1]:8080")
	before := hostState(t, w)
	r := newRuntime(t, w, confList(t, "1.1.0"))
	if err := r.do(func() error { return r.cni.GetStatusNetworkList(context.Background(), r.list) }); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	ids := []string{"cni-c1", "cni-c2"}
	res := map[string]*current.Result{}
	for _, id := range ids {
		ns := nstest.NewNS(t, id)
		res[id] = r.add(id, nil)
		if len(res[id].IPs) != 2 || len(res[id].Interfaces) != 2 || res[id].Interfaces[1].Sandbox == "" {
			t.Fatalf("ADD %s: %v", id, res[id])
		}
		resultAgrees(t, res[id], id)
		if seen, err := nstest.Echo(ns, "203.0.113.1:8080"); err != nil || seen != "203.0.113.2" {
			t.Errorf("%s IPv4 out: %q %v", id, seen, err)
		}
		if seen, err := nstest.Echo(ns, "[2001:db8::1]:8080"); err != nil || seen != "2001:db8::2" {
			t.Errorf("%s IPv6 out: %q %v", id, seen, err)
		}
		if err := r.check(id); err != nil {
			t.Errorf("CHECK %s: %v", id, err)
		}
	}
	a1, a2 := addrOf(res["cni-c1"], true), addrOf(res["cni-c2"], true)
	if a1 == a2 || !strings.HasPrefix(a1, "10.88.") || !strings.HasPrefix(a2, "10.88.") {
		t.Errorf("addresses %s, %s", a1, a2)
	}
	if nstest.Ping(t, "cni-c1", a2) || nstest.Ping(t, "cni-c2", addrOf(res["cni-c1"], false)) {
		t.Error("two containers reached each other")
	}

	// Drift: CHECK says what is wrong.
	nstest.Cmd(t, "ip", "-n", "cni-c2", "addr", "del", a2, "peer", res["cni-c2"].IPs[0].Gateway.String(), "dev", "eth0")
	if err := r.check("cni-c2"); err == nil || !strings.Contains(err.Error(), "lacks its address "+a2) {
		t.Errorf("CHECK after the address went: %v", err)
	}

	// DEL: twice, and for a container whose namespace is gone.
	for range 2 {
		if err := r.del("cni-c1"); err != nil {
			t.Errorf("DEL cni-c1: %v", err)
		}
	}
	netns.Delete("cni-c2")
	if err := r.del("cni-c2"); err != nil {
		t.Errorf("DEL with the namespace gone: %v", err)
	}
	if err := r.del("cni-never"); err != nil {
		t.Errorf("DEL of a container never added: %v", err)
	}

	// GC: c3 valid, c4 not; another nsnet user's link stays.
	other := nstest.NewNS(t, "cni-other")
	l, err := nat.Config{HostNS: w.Host}.Connect(other, "up0", netipPrefix("10.99.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"cni-c3", "cni-c4"} {
		nstest.NewNS(t, id)
		r.add(id, nil)
	}
	if err := r.gc("cni-c3"); err != nil {
		t.Fatalf("GC: %v", err)
	}
	c3, _ := netns.Open("cni-c3")
	c4, _ := netns.Open("cni-c4")
	defer c3.Close()
	defer c4.Close()
	if seen, err := nstest.Echo(c3, "203.0.113.1:8080"); err != nil || seen != "203.0.113.2" {
		t.Errorf("a valid attachment after GC: %q %v", seen, err)
	}
	if _, err := nstest.Echo(c4, "203.0.113.1:8080"); err == nil {
		t.Error("an attachment GC should have removed still works")
	}
	if seen, err := nstest.Echo(other, "203.0.113.1:8080"); err != nil || seen != "203.0.113.2" {
		t.Errorf("another nsnet user's link after GC: %q %v", seen, err)
	}
	l.Close()
	if err := r.del("cni-c3"); err != nil {
		t.Errorf("DEL cni-c3: %v", err)
	}
	if after := hostState(t, w); after != before {
		t.Errorf("the host changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestLibcniChained: nsnet-cni followed by the reference tuning plugin,
// which finds the container's interface in nsnet-cni's result and sets
// its MTU; port mappings from the runtime (the portMappings capability)
// publish a container's port, also while the runtime holds it bound (as
// podman does); the ips capability picks the address, the mac capability
// or MAC in CNI_ARGS (podman's, at a reload) the MAC; cniVersion 1.0.0
// and 0.4.0 work too.
func TestLibcniChained(t *testing.T) {
	w := nstest.NewWorld(t, "cnic-")
	before := hostState(t, w)
	// The runtime's reservation of the host port, as podman's conmon
	// holds it (at a network reload it is there before ADD).
	var reservation net.Listener
	if err := w.Host.Do(func() (err error) { reservation, err = net.Listen("tcp", ":8081"); return err }); err != nil {
		t.Fatal(err)
	}
	defer reservation.Close()
	for _, v := range []string{"1.1.0", "1.0.0", "0.4.0"} {
		r := newRuntime(t, w, confList(t, v, map[string]any{"type": "tuning", "mtu": 1400}))
		ns := nstest.NewNS(t, "cnic-"+strings.ReplaceAll(v, ".", ""))
		id := "cnic-" + strings.ReplaceAll(v, ".", "")
		nstest.Listen(t, ns, "0.0.0.0:80")
		caps := map[string]any{"portMappings": []map[string]any{{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}},
			"ips": []string{"10.88.7.7/16"}}
		mac := map[string]string{"1.1.0": "c2:00:00:00:01:10", "1.0.0": "c2:00:00:00:01:00", "0.4.0": "c2:00:00:00:00:40"}[v]
		if v == "1.1.0" {
			caps["mac"] = mac // the mac capability
		} else {
			caps["CNI_ARGS MAC"] = mac
		}
		res := r.add(id, caps)
		if out := nstest.Cmd(t, "ip", "-n", id, "link", "show", "eth0"); !strings.Contains(out, "link/ether "+mac) || res.Interfaces[1].Mac != mac {
			t.Errorf("%s: MAC %s asked for; the result says %s:\n%s", v, mac, res.Interfaces[1].Mac, out)
		}
		if a := addrOf(res, true); a != "10.88.7.7" {
			t.Errorf("%s: the ips capability asked for 10.88.7.7, ADD gave %s", v, a)
		}
		resultAgrees(t, res, id)
		if out := nstest.Cmd(t, "ip", "-n", id, "link", "show", "eth0"); !strings.Contains(out, "mtu 1400") {
			t.Errorf("%s: tuning did not set the MTU:\n%s", v, out)
		}
		if seen, err := nstest.Echo(w.Inet, "203.0.113.2:8081"); err != nil || seen != "203.0.113.1" {
			t.Errorf("%s: the published port: %q %v", v, seen, err)
		}
		// From the host on 127.0.0.1, as with ptp+portmap and docker -p.
		if seen, err := nstest.Echo(w.Host, "127.0.0.1:8081"); err != nil || seen != "10.88.0.1" {
			t.Errorf("%s: the published port from the host's 127.0.0.1: %q %v", v, seen, err)
		}
		if res.CNIVersion != "1.1.0" && v == "1.1.0" {
			t.Errorf("result version %s", res.CNIVersion)
		}
		if err := r.del(id); err != nil {
			t.Errorf("%s: DEL: %v", v, err)
		}
	}
	if after := hostState(t, w); after != before {
		t.Errorf("the host changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestLibcniChainedAfter: nsnet-cni after the reference loopback plugin:
// its result keeps loopback's interface and addresses in front, its own
// after them (interface indexes shifted), and CHECK passes with that
// result as prevResult.
func TestLibcniChainedAfter(t *testing.T) {
	w := nstest.NewWorld(t, "cnia-")
	list := confList(t, "1.1.0")
	var conf map[string]any
	json.Unmarshal(list.Bytes, &conf)
	conf["plugins"] = append([]any{map[string]any{"type": "loopback"}}, conf["plugins"].([]any)...)
	b, _ := json.Marshal(conf)
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	r := newRuntime(t, w, list)
	nstest.NewNS(t, "cnia-c")
	res := r.add("cnia-c", nil)
	if len(res.Interfaces) != 3 || res.Interfaces[0].Name != "lo" || res.Interfaces[2].Name != "eth0" {
		t.Fatalf("interfaces %v", res.Interfaces)
	}
	resultAgrees(t, res, "cnia-c")
	for _, ipc := range res.IPs {
		if ipc.Address.IP.IsLoopback() != (*ipc.Interface == 0) || (!ipc.Address.IP.IsLoopback() && *ipc.Interface != 2) {
			t.Errorf("address %v on interface %d", ipc.Address, *ipc.Interface)
		}
	}
	if err := r.check("cnia-c"); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := r.del("cnia-c"); err != nil {
		t.Errorf("DEL: %v", err)
	}
}

// TestPluginErrors: errors are CNI error objects with codes a runtime can
// show.
func TestPluginErrors(t *testing.T) {
	w := nstest.NewWorld(t, "cnie-")
	list := confList(t, "1.1.0")
	var conf map[string]any
	json.Unmarshal(list.Plugins[0].Bytes, &conf)
	conf["uplink"] = "nope0"
	b, _ := json.Marshal(conf)
	list.Plugins[0].Bytes = b
	r := newRuntime(t, w, list)
	nstest.NewNS(t, "cnie-c")
	err := r.do(func() error {
		_, err := r.cni.AddNetworkList(context.Background(), r.list, r.rt("cnie-c", nil))
		return err
	})
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrInternal || !strings.Contains(te.Msg, "nope0") {
		t.Errorf("ADD with a missing uplink: %#v", err)
	}
	err = r.do(func() error {
		_, err := r.cni.AddNetworkList(context.Background(), r.list, &libcni.RuntimeConf{ContainerID: "x", NetNS: "/nonexistent", IfName: "eth0"})
		return err
	})
	if !errors.As(err, &te) || te.Code != types.ErrInvalidNetNS {
		t.Errorf("ADD with a missing namespace: %#v", err)
	}
	_ = fmt.Sprint()
}

// TestLibcniParallel: a runtime starting and stopping many containers at
// once (the kubelet does) runs the plugin in parallel: 8 ADDs at once get
// 8 working links, 8 DELs at once remove them all, and the host reads as
// before.
func TestLibcniParallel(t *testing.T) {
	w := nstest.NewWorld(t, "cnip-")
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	before := hostState(t, w)
	r := newRuntime(t, w, confList(t, "1.1.0"))
	const n = 8
	var nss []*netns.Handle
	for i := range n {
		nss = append(nss, nstest.NewNS(t, fmt.Sprintf("cnip-%d", i)))
	}
	errs := make(chan error, n)
	for i := range n {
		go func() {
			errs <- r.do(func() error {
				_, err := r.cni.AddNetworkList(context.Background(), r.list, r.rt(fmt.Sprintf("cnip-%d", i), nil))
				return err
			})
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("parallel ADD: %v", err)
		}
	}
	for i, ns := range nss {
		if seen, err := nstest.Echo(ns, "203.0.113.1:8080"); err != nil || seen != "203.0.113.2" {
			t.Errorf("container %d: %q %v", i, seen, err)
		}
	}
	for i := range n {
		go func() { errs <- r.del(fmt.Sprintf("cnip-%d", i)) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("parallel DEL: %v", err)
		}
	}
	if after := hostState(t, w); after != before {
		t.Errorf("the host changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// olderLibcni is the libcni of the runtimes before spec 1.1.0 (podman 4's
// CNI backend has it), which TestOlderLibcni builds a driver with.
const olderLibcni = "v1.1.2"

// TestOlderLibcni drives nsnet-cni through libcni v1.1.2, built into a
// program of its own (a module outside this one), as podman 4 does:
// results 1.0.0 and 0.4.0 parse there and agree with the interface, the
// container reaches the outside, MAC in CNI_ARGS is honoured, CHECK and
// DEL pass, and the host is as before.
func TestOlderLibcni(t *testing.T) {
	w := nstest.NewWorld(t, "cnio-")
	plugins := pluginDir(t)
	nstest.RequireCmd(t, "nsenter")
	nstest.Listen(t, w.Inet, "203.0.113.1:8080")
	before := hostState(t, w)
	mod := t.TempDir()
	src, err := os.ReadFile("testdata/libcni-driver/main.go.txt")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(mod, "main.go"), src, 0o644)
	os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module driver\n\ngo 1.21\n\nrequire github.com/containernetworking/cni "+olderLibcni+"\n"), 0o644)
	build := exec.Command("go", "build", "-o", "driver", ".")
	build.Dir = mod
	// From the module cache only (TestMain downloaded it; the private
	// world has no network).
	build.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOSUMDB=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building a driver with libcni %s: %v\n%s", olderLibcni, err, out)
	}
	for i, v := range []string{"1.0.0", "0.4.0"} {
		id := fmt.Sprintf("cnio-c%d", i)
		ns := nstest.NewNS(t, id)
		conf := filepath.Join(t.TempDir(), "net.conflist")
		if err := os.WriteFile(conf, confList(t, v).Bytes, 0o644); err != nil {
			t.Fatal(err)
		}
		mac := fmt.Sprintf("c2:00:00:00:02:%02x", i)
		cache := t.TempDir() // libcni's record of ADD's result, which CHECK reads
		driver := func(cmd string, extra ...string) (string, error) {
			c := exec.Command("nsenter", append([]string{"--net=/run/netns/" + w.HostName, "--", filepath.Join(mod, "driver"), plugins, conf, cmd, id,
				filepath.Join(netns.Dir, id)}, extra...)...)
			c.Env = append(os.Environ(), "DRIVER_CACHE="+cache)
			var out, stderr strings.Builder
			c.Stdout, c.Stderr = &out, &stderr
			if err := c.Run(); err != nil {
				return out.String(), fmt.Errorf("%v: %s", err, stderr.String())
			}
			return out.String(), nil
		}
		out, err := driver("add", mac)
		if err != nil {
			t.Fatalf("%s: ADD: %v", v, err)
		}
		raw, err := version.NewResult(v, []byte(out))
		if err != nil {
			t.Fatalf("%s: the result does not parse as %s: %v\n%s", v, v, err, out)
		}
		res, err := current.NewResultFromResult(raw)
		if err != nil {
			t.Fatal(err)
		}
		resultAgrees(t, res, id)
		if link := nstest.Cmd(t, "ip", "-n", id, "link", "show", "eth0"); !strings.Contains(link, "link/ether "+mac) {
			t.Errorf("%s: MAC %s in CNI_ARGS not honoured:\n%s", v, mac, link)
		}
		if seen, err := nstest.Echo(ns, "203.0.113.1:8080"); err != nil || seen != "203.0.113.2" {
			t.Errorf("%s: out: %q %v", v, seen, err)
		}
		if _, err := driver("check"); err != nil {
			t.Errorf("%s: CHECK: %v", v, err)
		}
		if _, err := driver("del"); err != nil {
			t.Errorf("%s: DEL: %v", v, err)
		}
	}
	if after := hostState(t, w); after != before {
		t.Errorf("the host changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
