package nat_test

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nstest"
)

// recipe returns the commands of docs/firewalls.md's recipe name: the lines of
// the sh block after "<!-- recipe: name -->".
func recipe(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile("../docs/firewalls.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- recipe: "+name+" -->\n```sh\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatalf("docs/firewalls.md has no recipe %q", name)
	}
	return strings.Split(strings.TrimSpace(block), "\n")
}

// privateDirs mounts an empty tmpfs on each dir (in the sandbox's own
// mount namespace) for the rest of t; with keep, the dir's files are
// copied onto it.
func privateDirs(t *testing.T, keep bool, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		var saved string
		if keep {
			saved = t.TempDir()
			nstest.Cmd(t, "cp", "-a", d+"/.", saved)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("tmpfs", d, "tmpfs", 0, "mode=0755"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Unmount(d, syscall.MNT_DETACH) })
		if keep {
			nstest.Cmd(t, "cp", "-a", saved+"/.", d)
		}
	}
}

// daemon starts a long-running process for the rest of t.
func daemon(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// startFirewalld runs firewalld in w's host namespace, on a private
// system bus and with a private /etc/firewalld.
func startFirewalld(t *testing.T, w *nstest.World) {
	for _, c := range []string{"firewalld", "firewall-cmd", "dbus-daemon"} {
		nstest.RequireCmd(t, c)
	}
	privateDirs(t, false, "/run/dbus", "/run/firewalld", "/etc/firewalld", "/var/log")
	// The system bus as configured, less its switch to the messagebus
	// user: a rootless world maps no other user (as root it changes
	// nothing the test needs).
	conf, err := os.ReadFile("/usr/share/dbus-1/system.conf")
	if err != nil {
		nstest.MissingTool(t, "dbus system bus configuration: %v (Debian: apt-get install dbus)", err)
	}
	file := filepath.Join(t.TempDir(), "system.conf")
	conf = regexp.MustCompile(`<user>[^<]*</user>`).ReplaceAll(conf, nil)
	conf = bytes.ReplaceAll(conf, []byte("<includedir>system.d</includedir>"),
		[]byte("<includedir>/usr/share/dbus-1/system.d</includedir>")) // relative to the file
	if err := os.WriteFile(file, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	daemon(t, "dbus-daemon", "--config-file="+file, "--nofork", "--nopidfile")
	daemon(t, "ip", "netns", "exec", w.HostName, "firewalld", "--nofork", "--nopid")
	for i := 0; ; i++ {
		out, _ := exec.Command("ip", "netns", "exec", w.HostName, "firewall-cmd", "--state").Output()
		if strings.TrimSpace(string(out)) == "running" {
			return
		}
		if i == 150 {
			t.Fatalf("firewalld did not start: %q", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startUfw enables ufw in w's host namespace, with a private /etc/ufw.
func startUfw(t *testing.T, w *nstest.World) {
	nstest.RequireCmd(t, "ufw")
	if nstest.Rootless() {
		// /etc/ufw's rules are root's alone: a fresh private copy from
		// the package's templates, as its installation makes them.
		saved := t.TempDir()
		nstest.Cmd(t, "cp", "-r", "/etc/ufw/sysctl.conf", "/etc/ufw/applications.d", saved)
		privateDirs(t, false, "/etc/ufw")
		nstest.Cmd(t, "cp", "-r", saved+"/.", "/usr/share/ufw/iptables/.", "/etc/ufw")
		for _, f := range []string{"before.init", "after.init", "ufw.conf"} {
			nstest.Cmd(t, "cp", "/usr/share/ufw/"+f, "/etc/ufw")
		}
	} else {
		privateDirs(t, true, "/etc/ufw")
	}
	nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "ufw", "--force", "enable")
}

// legacyDocker gives w's host Docker's chains on the legacy iptables
// backend, and returns a PATH on which "iptables" is iptables-legacy, as
// on such a host.
func legacyDocker(t *testing.T, w *nstest.World) string {
	nstest.RequireCmd(t, "iptables-legacy")
	for _, args := range [][]string{{"-N", "DOCKER-USER"}, {"-A", "DOCKER-USER", "-j", "RETURN"},
		{"-A", "FORWARD", "-j", "DOCKER-USER"}, {"-P", "FORWARD", "DROP"}} {
		nstest.Cmd(t, "ip", append([]string{"netns", "exec", w.HostName, "iptables-legacy"}, args...)...)
	}
	dir := t.TempDir()
	legacy, _ := exec.LookPath("iptables-legacy")
	if err := os.Symlink(legacy, filepath.Join(dir, "iptables")); err != nil {
		t.Fatal(err)
	}
	return dir + ":" + os.Getenv("PATH")
}

// TestFirewallRecipes runs each recipe of docs/firewalls.md ("Hosts with
// another firewall") against the real firewall in a private world: the default
// Connect names the firewall's chain; with AllowForeignDrop and before
// the recipe, TCP out fails (the firewall drops it); after it, TCP goes
// out and back, masqueraded, nothing unsolicited gets in, and where the
// firewall filters the host's input (firewalld, ufw) the namespace still
// cannot reach a service of the host.
func TestFirewallRecipes(t *testing.T) {
	requireTools(t)
	for _, c := range []struct {
		name        string
		start       func(t *testing.T, w *nstest.World) (path string)
		chain       string // named by the default Connect's error
		inputClosed bool   // the firewall keeps the namespaces from the host's services
	}{
		{"firewalld", func(t *testing.T, w *nstest.World) string { startFirewalld(t, w); return "" },
			"inet firewalld filter_FORWARD", true},
		{"ufw", func(t *testing.T, w *nstest.World) string { startUfw(t, w); return "" },
			"ip filter FORWARD", true},
		{"iptables", func(t *testing.T, w *nstest.World) string {
			nstest.Cmd(t, "ip", "netns", "exec", w.HostName, "iptables", "-P", "FORWARD", "DROP")
			return ""
		}, "ip filter FORWARD", false},
		{"docker-legacy", legacyDocker, "legacy iptables filter FORWARD", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := nstest.NewWorld(t, "rcp-")
			path := c.start(t, w)
			ns := nstest.NewNS(t, "rcp-ns")
			p := netip.MustParsePrefix("10.41.0.0/24")
			_, err := nat.Config{HostNS: w.Host}.Connect(ns, "up0", p)
			if !errors.Is(err, nat.ErrForeignDrop) || !strings.Contains(err.Error(), c.chain) {
				t.Fatalf("Connect: %v, want ErrForeignDrop naming %s", err, c.chain)
			}
			l, err := nat.Config{HostNS: w.Host, AllowForeignDrop: true}.Connect(ns, "up0", p)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			outside := "203.0.113.1:7001"
			nstest.Listen(t, w.Inet, outside)
			if _, err := nstest.Echo(ns, outside); err == nil {
				t.Fatal("TCP passed before the recipe: the test proves nothing")
			}
			for _, line := range recipe(t, c.name) {
				cmd := exec.Command("ip", "netns", "exec", w.HostName, "sh", "-c", line)
				if path != "" {
					cmd.Env = append(os.Environ(), "PATH="+path)
				}
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%s: %v\n%s", line, err, out)
				}
			}
			seen, err := nstest.Echo(ns, outside)
			if err != nil || seen != "203.0.113.2" {
				t.Errorf("TCP after the recipe: seen from %q, %v; want the uplink's 203.0.113.2", seen, err)
			}
			if unsolicited(t, w, l.NSAddr.Addr().String()) {
				t.Error("the outside reaches the namespace")
			}
			if c.inputClosed {
				service := l.HostAddr.Addr().String() + ":7002"
				nstest.Listen(t, w.Host, service)
				if _, err := nstest.Echo(ns, service); err == nil {
					t.Error("the namespace reaches a service of the host")
				}
			}
			if err := l.Close(); err != nil {
				t.Error(err)
			}
			if out := nftIn(t, w, "list", "tables"); strings.Contains(out, "table inet nsnet") {
				t.Errorf("nsnet's table left after Close:\n%s", out)
			}
		})
	}
}
