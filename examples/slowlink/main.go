//go:build linux

// Command slowlink shows what a test of a client's retry logic does: it
// connects a namespace through a slow link (2 Mbit/s out of it), uploads
// 512 KiB to the outside host and times it, then makes the link lossy
// and slow to answer (20 ms each way, 10% loss) and shows a client that
// retries with a timeout getting through anyway. It runs in a private
// world of its own (nstest.Isolate), safe on any Linux machine, as root or
// not:
//
//	go run ./examples/slowlink
//
// Delay and loss need the kernel's sch_netem; where it is missing the
// program says so and shows the rate alone.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/nsnet/nsnet/nat"
	"github.com/nsnet/nsnet/netns"
	"github.com/nsnet/nsnet/nstest"
	"github.com/nsnet/nsnet/qdisc"
)

func main() {
	w, err := nstest.Isolate() // re-runs this program in private namespaces; returns only there
	if err != nil {
		log.Fatal(err)
	}
	err = run(w)
	w.Close()
	if err != nil {
		log.Fatal(err)
	}
}

func run(w *nstest.World) error {
	sink, err := w.Inet.Listen("tcp", w.Outside.String()+":9000")
	if err != nil {
		return err
	}
	defer sink.Close()
	go serve(sink)

	ns, err := netns.NewAnonymous()
	if err != nil {
		return err
	}
	defer ns.Close()
	slow := qdisc.Impairment{Rate: 2e6} // 2 Mbit/s from the namespace
	l, err := nat.Config{FromNS: slow}.Connect(ns, w.Uplink, netip.Prefix{})
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Printf("connected %s, from the namespace: %s\n", l.Prefix, slow)

	start := time.Now()
	c, err := ns.Dial("tcp", w.Outside.String()+":9000")
	if err != nil {
		return err
	}
	fmt.Fprintf(c, "upload\n")
	io.CopyN(c, zeros{}, 512<<10)
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c)
	c.Close()
	secs := time.Since(start).Seconds()
	fmt.Printf("512 KiB uploaded in %.1f s: %.2f Mbit/s\n", secs, 512*1024*8/secs/1e6)

	lossy := qdisc.Impairment{Delay: 20 * time.Millisecond, Loss: 10}
	if err := l.Impair(lossy, lossy); err != nil {
		if strings.Contains(err.Error(), "lacks sch_netem") {
			fmt.Println("this kernel has no sch_netem: delay and loss are not available here")
			return nil
		}
		return err
	}
	fmt.Printf("both ways now: %s\n", lossy)
	for try := 1; try <= 10; try++ {
		rtt, err := ask(ns, w.Outside.String()+":9000", 300*time.Millisecond)
		if err == nil {
			fmt.Printf("try %d: answered in %v\n", try, rtt.Round(time.Millisecond))
			return nil
		}
		fmt.Printf("try %d: %v; again\n", try, err)
	}
	return errors.New("no answer in 10 tries")
}

// ask sends "ping" and waits for the answer, at most timeout in all.
func ask(ns *netns.Handle, addr string, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	c, err := ns.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(start.Add(timeout))
	fmt.Fprintf(c, "ping\n")
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// serve answers "ping" with "pong", and reads an upload to its end.
func serve(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			line, _ := r.ReadString('\n')
			if line == "upload\n" {
				io.Copy(io.Discard, r)
				return
			}
			fmt.Fprintf(c, "pong\n")
		}()
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }
