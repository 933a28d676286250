package nstest_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nsnet/nsnet/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// userTest is a test as a user of nsnet writes it in a module of their
// own: a private world, a namespace connected through NAT, real TCP.
const userTest = `package user

import (
	"net/netip"
	"testing"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

func TestConnect(t *testing.T) {
	nstest.CheckLeaks(t)
	w := nstest.NewWorld(t, "user-")
	ns := nstest.NewNS(t, "user-ns")
	l, err := nat.Config{HostNS: w.Host}.Connect(ns, w.Uplink, netip.MustParsePrefix("10.0.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	target := w.Outside.String() + ":8080"
	nstest.Listen(t, w.Inet, target)
	seen, err := nstest.Echo(ns, target)
	if err != nil || seen != w.UplinkAddr.Addr().String() {
		t.Fatalf("echo: seen from %q, %v", seen, err)
	}
	t.Logf("the outside host saw %s", seen)
}
`

// outsideModule is a module in a temporary directory that requires this
// one through a replace directive; goCmd runs the go command in it,
// offline (the private world has no network: the module cache has what
// this repository needs), and fails t if it fails.
type outsideModule struct {
	t   *testing.T
	dir string
}

func newOutsideModule(t *testing.T) *outsideModule {
	t.Helper()
	nstest.Require(t)
	nstest.RequireCmd(t, "go")
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	m := &outsideModule{t: t, dir: t.TempDir()}
	goMod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := ""
	for _, l := range strings.Split(string(goMod), "\n") {
		if strings.HasPrefix(l, "go ") {
			goLine = l
		}
	}
	m.write("go.mod", "module example.com/user\n\n"+goLine+"\n\nrequire github.com/nsnet/nsnet v0.0.0\n\nreplace github.com/nsnet/nsnet => "+repo+"\n")
	sum, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	m.write("go.sum", string(sum))
	return m
}

func (m *outsideModule) write(name, text string) {
	m.t.Helper()
	p := filepath.Join(m.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		m.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		m.t.Fatal(err)
	}
}

func (m *outsideModule) goCmd(args ...string) string {
	m.t.Helper()
	return m.goCmdEnv(nil, args...)
}

func (m *outsideModule) goCmdEnv(env []string, args ...string) string {
	m.t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = m.dir
	// The user's tests make their own private world, as fresh processes;
	// a skip would be a failure.
	cmd.Env = append(append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "NSNET_PRIVATE=", "NSNET_REQUIRE_PRIVILEGED=1"), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		m.t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestOutsideModule: a module outside this repository (a replace directive
// pointing here) imports nstest and nat, runs a privileged test of its own
// in a private world, and passes; every example program under examples/
// builds there, so a user who copies one gets code that compiles; and the
// CNI plugin's binary installs from there.
func TestOutsideModule(t *testing.T) {
	m := newOutsideModule(t)
	m.write("user_test.go", userTest)
	examples, _ := filepath.Glob(filepath.Join("..", "examples", "*", "main.go"))
	if len(examples) == 0 {
		t.Fatal("no examples found")
	}
	for _, e := range examples {
		src, err := os.ReadFile(e)
		if err != nil {
			t.Fatal(err)
		}
		m.write(filepath.Join("cmd", filepath.Base(filepath.Dir(e)), "main.go"), string(src))
	}
	m.goCmd("build", "./...")
	// The CNI plugin installs from there as a user's go install would.
	gobin := t.TempDir()
	m.goCmdEnv([]string{"GOBIN=" + gobin}, "install", "github.com/nsnet/nsnet/cni/nsnet-cni")
	if _, err := os.Stat(filepath.Join(gobin, "nsnet-cni")); err != nil {
		t.Errorf("go install of nsnet-cni: %v", err)
	}
	out := m.goCmd("test", "-count=1", "-v", "./...")
	if !strings.Contains(out, "--- PASS: TestConnect") || !strings.Contains(out, "the outside host saw 203.0.113.2") {
		t.Errorf("the user's test did not pass as expected:\n%s", out)
	}
}
