// Package demo holds what the example programs share: entering a private
// world (own network and mount namespaces, a fake uplink and outside host)
// unless told to use the real host, and a TCP echo on the outside host to
// prove connectivity.
package demo

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/nsnet/nsnet/internal/private"
	"github.com/nsnet/nsnet/internal/world"
	"github.com/nsnet/nsnet/netns"
)

const envPrivate = "NSNET_EXAMPLE_PRIVATE"

// Private re-executes the program inside private namespaces and exits with
// its status; in the re-executed program it sets them up, builds the world
// (host = the private namespace, uplink up0, outside host 203.0.113.1) and
// returns it.
func Private() *world.World {
	if !private.Inside(envPrivate) {
		if os.Geteuid() != 0 {
			fmt.Fprintln(os.Stderr, "needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN): try sudo")
			os.Exit(1)
		}
		code, err := private.Rerun(envPrivate)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(code)
	}
	if err := private.SetUp(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	w, err := world.New("", "inet")
	if err != nil {
		fmt.Fprintln(os.Stderr, "build private world:", err)
		os.Exit(1)
	}
	return w
}

// EchoServer listens on addr inside ns and answers each connection with
// the source address it sees. It runs until the program ends.
func EchoServer(ns *netns.Handle, addr string) error {
	var l net.Listener
	err := ns.Do(func() (err error) { l, err = net.Listen("tcp", addr); return err })
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello %s\n", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	return nil
}

// Dial connects from inside ns to addr and returns the first line the
// server sends.
func Dial(ns *netns.Handle, addr string) (string, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 3*time.Second)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return line, err
}
