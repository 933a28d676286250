package nstest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/route"
)

// readmeQuickstart returns the Go program of the README's Quickstart.
func readmeQuickstart(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "## Quickstart\n\n```go\n")
	src, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README has no Quickstart program")
	}
	return src
}

// selfSigned returns a TLS certificate for name and its PEM, for a CA file.
func selfSigned(t *testing.T, name string) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestReadmeQuickstart builds the README's Quickstart as a user would (a
// module of its own) and runs it as written on a host made of this test's
// private namespace: uplink up0 with the default route, its
// /etc/resolv.conf naming the outside host, which serves example.org's
// name and (with a certificate curl is told to trust) its HTTPS page. It
// prints the page's headers and leaves nothing behind; a second run,
// interrupted (SIGINT) while curl waits for the page, leaves nothing
// either.
func TestReadmeQuickstart(t *testing.T) {
	nstest.RequireCmd(t, "curl")
	m := newOutsideModule(t)
	m.write("main.go", readmeQuickstart(t))
	bin := filepath.Join(m.dir, "quickstart")
	m.goCmd("build", "-o", bin, ".")

	w, err := nstest.BuildWorld("", "qs-inet") // the uplink in this namespace
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := route.AddDefault(nil, w.Outside); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(conf, []byte("nameserver 203.0.113.1\n"), 0o644)
	if err := syscall.Mount(conf, "/etc/resolv.conf", "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer syscall.Unmount("/etc/resolv.conf", syscall.MNT_DETACH)
	dns, err := nstest.ServeDNS(w.Inet, "203.0.113.1:53", map[string]netip.Addr{"example.org": w.Outside})
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	cert, caPEM := selfSigned(t, "example.org")
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, caPEM, 0o644)
	l, err := w.Inet.Listen("tcp", "203.0.113.1:443")
	if err != nil {
		t.Fatal(err)
	}
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	var hang atomic.Bool
	srv := &http.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			if hang.Load() {
				arrived <- struct{}{}
				<-release
			}
			rw.Header().Set("X-Served-By", "the outside host")
		}),
	}
	go srv.ServeTLS(l, "", "")
	defer srv.Close()
	defer close(release)

	leftovers := func() string {
		var left []string
		if out := nstest.Cmd(t, "ip", "-o", "link"); strings.Contains(out, "nsn-") {
			left = append(left, "links:\n"+out)
		}
		if out, _ := nstest.CmdErr("nft", "list", "tables"); strings.Contains(out, "nsnet") {
			left = append(left, "nftables: "+out)
		}
		if b, _ := os.ReadFile("/proc/sys/net/ipv4/conf/up0/forwarding"); string(b) != "0\n" {
			left = append(left, "up0 forwarding "+string(b))
		}
		if ents, _ := os.ReadDir("/run/netns-etc"); len(ents) > 0 {
			left = append(left, "/run/netns-etc has entries")
		}
		return strings.Join(left, "\n")
	}
	run := func() *exec.Cmd {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "CURL_CA_BUNDLE="+ca)
		return cmd
	}

	out, err := run().CombinedOutput()
	if err != nil || !strings.Contains(string(out), "200") || !strings.Contains(strings.ToLower(string(out)), "x-served-by: the outside host") {
		t.Fatalf("the quickstart: %v\n%s", err, out)
	}
	if left := leftovers(); left != "" {
		t.Errorf("the quickstart left:\n%s", left)
	}

	hang.Store(true)
	cmd := run()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-arrived:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("curl's request never arrived")
	}
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err == nil {
		t.Error("the interrupted quickstart exited 0")
	}
	if left := leftovers(); left != "" {
		t.Errorf("the interrupted quickstart left:\n%s", left)
	}
}
