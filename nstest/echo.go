package nstest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nsnet/nsnet/netns"
)

// Serve starts a TCP echo server inside ns on addr ("ip:port") and
// returns its listener; close it to stop the server. Each connection gets
// its peer's address written back first (what the server sees: after NAT,
// the uplink's address), then an echo of one line.
func Serve(ns *netns.Handle, addr string) (net.Listener, error) {
	var l net.Listener
	err := ns.Do(func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).IP)
				r := bufio.NewReader(c)
				line, _ := r.ReadString('\n')
				io.WriteString(c, line)
				// The client closes first, so that TIME_WAIT is its own,
				// not this server's: behind NAT, a later client of another
				// namespace may be given the same address and port once
				// the first's conntrack entry is gone (nat's Close flushes
				// it), and a server in TIME_WAIT for that pair drops its
				// SYN (PAWS: another namespace's TCP timestamps).
				io.Copy(io.Discard, r)
			}()
		}
	}()
	return l, nil
}

// Listen is Serve for a test: the server stops when t ends.
func Listen(t testing.TB, ns *netns.Handle, addr string) {
	t.Helper()
	l, err := Serve(ns, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
}

// Echo dials addr from inside ns (a Serve server), sends a line and
// returns the source address the server saw, checking that the line came
// back. It gives up after 2 s without a connection.
func Echo(ns *netns.Handle, addr string) (seenFrom string, err error) {
	var c net.Conn
	err = ns.Do(func() (err error) {
		// The socket is created on the namespaced thread and stays in that
		// namespace; using it afterwards from any thread is fine.
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

// ServeUDP starts a UDP echo server inside ns on addr: it answers each
// datagram with the address of its sender (what the server sees), then
// the datagram itself. Close the returned connection to stop it.
func ServeUDP(ns *netns.Handle, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := ns.Do(func() (err error) {
		c, err = net.ListenPacket("udp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(append([]byte(from.(*net.UDPAddr).IP.String()+"\n"), buf[:n]...), from)
		}
	}()
	return c, nil
}

// EchoUDP sends a datagram from inside ns to addr (a ServeUDP server) and
// returns the source address the server saw, checking that the datagram
// came back. It gives up after 2 s.
func EchoUDP(ns *netns.Handle, addr string) (seenFrom string, err error) {
	var c net.Conn
	err = ns.Do(func() (err error) {
		c, err = net.Dial("udp", addr)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "hello"); err != nil {
		return "", err
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	seen, back, _ := strings.Cut(string(buf[:n]), "\n")
	if back != "hello" {
		return "", fmt.Errorf("echo returned %q", back)
	}
	return seen, nil
}
