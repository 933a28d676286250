// Package testnet holds test helpers that need the public packages: named
// namespaces that clean up after the test, TCP echo checks across
// namespaces, and ip/nft oracles. Only tests import it.
package testnet

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nsnet/nsnet/internal/sandbox"
	"github.com/nsnet/nsnet/netns"
)

// NewNS makes a named namespace removed (handle closed, name deleted) when
// t ends.
func NewNS(t testing.TB, name string) *netns.Handle {
	t.Helper()
	h, err := netns.New(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close()
		netns.Delete(name)
	})
	return h
}

// Ping reports whether "ping -c1 -W1 [-6] dst" from inside the named
// namespace succeeds.
func Ping(t testing.TB, nsName, dst string) bool {
	t.Helper()
	_, err := sandbox.CmdErr("ip", "netns", "exec", nsName, "ping", "-c1", "-W1", "-q", dst)
	return err == nil
}

// Listen starts a TCP echo server inside ns on addr ("ip:port"); each
// accepted connection gets its peer's address written back first, then an
// echo of one line. It stops when t ends.
func Listen(t testing.TB, ns *netns.Handle, addr string) {
	t.Helper()
	var l net.Listener
	err := ns.Do(func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).IP)
				line, _ := bufio.NewReader(c).ReadString('\n')
				io.WriteString(c, line)
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
}

// Echo dials addr from inside ns, sends a line and returns the source
// address the server saw, checking that the line came back.
func Echo(ns *netns.Handle, addr string) (seenFrom string, err error) {
	var c net.Conn
	err = ns.Do(func() (err error) {
		// The socket is created on the namespaced thread and stays in that
		// namespace; connecting afterwards from any thread is fine.
		d := net.Dialer{Timeout: 2 * time.Second}
		c, err = d.Dial("tcp", addr)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	seen, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		return "", err
	}
	back, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if back != "hello\n" {
		return "", fmt.Errorf("echo returned %q", back)
	}
	return strings.TrimSpace(seen), nil
}
