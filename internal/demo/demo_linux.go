// Package demo holds what the example programs and the bench share:
// entering a private world (own network and mount namespaces, a fake uplink
// and outside host) unless told to use the real host, and a TCP echo on the
// outside host to prove connectivity.
package demo

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"net/netip"
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

// Flags are the options the tutorial and connect examples share.
type Flags struct {
	Uplink string       // the uplink to NAT through
	Target string       // a TCP HOST:PORT outside to prove connectivity, or ""
	Prefix netip.Prefix // the namespace's network
}

// ParseFlags defines and parses -uplink, -probe and -cidr. Without -uplink
// it enters a private world (see Private) with an echo server on the
// outside host as the target; done removes that world.
func ParseFlags() (f Flags, done func()) {
	uplink := flag.String("uplink", "", "run on the real host, NAT through this link (default: a private world)")
	probe := flag.String("probe", "", "with -uplink: a TCP HOST:PORT outside to connect to")
	cidr := flag.String("cidr", "10.0.0.0/24", "the namespace's network")
	flag.Parse()
	prefix, err := netip.ParsePrefix(*cidr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	f = Flags{Uplink: *uplink, Target: *probe, Prefix: prefix}
	if f.Uplink != "" {
		return f, func() {}
	}
	w := Private()
	f.Uplink, f.Target = world.Uplink, world.Outside.String()+":8080"
	if err := EchoServer(w.Inet, f.Target); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("# private world: uplink %s %v, outside host %v in namespace inet\n\n", world.Uplink, world.UplinkAddr, world.Outside)
	return f, func() { w.Close() }
}

// Main parses the shared flags (see ParseFlags), calls run with them,
// removes the private world and exits non-zero if run failed.
func Main(run func(uplink string, prefix netip.Prefix, target string) error) {
	f, done := ParseFlags()
	err := run(f.Uplink, f.Prefix, f.Target)
	done()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
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
