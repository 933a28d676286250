package netns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/nsnet/nsnet/internal/resolv"
)

// Go networking in a namespace. A socket belongs to the network namespace
// of the thread that created it, for its whole life: these methods create
// it on a thread inside h (see Do), and the connection or listener they
// return is then used from any goroutine, like any other. Code that makes
// its own sockets on other goroutines (net/http's Transport dials on
// goroutines of its own) does not follow a Do; give it these instead. An
// http.Client whose connections come from the namespace, names resolved
// as the namespace's commands resolve them:
//
//	client := &http.Client{Transport: &http.Transport{DialContext: ns.DialContext}}

// Dial is DialContext without a context.
func (h *Handle) Dial(network, address string) (net.Conn, error) {
	return h.DialContext(context.Background(), network, address)
}

// DialContext connects to address on the named network (as net.Dial:
// "tcp", "udp", "tcp4", "unix"...) from inside h's namespace. A host name
// in address is resolved with h.Resolver, and its addresses are tried in
// turn. A nil h dials from the current namespace.
func (h *Handle) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	dial := func(addr string) (c net.Conn, err error) {
		err = h.do(func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		}, false)
		return c, err
	}
	if !strings.HasPrefix(network, "tcp") && !strings.HasPrefix(network, "udp") {
		return dial(address)
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if host == "" || net.ParseIP(host) != nil {
		return dial(address)
	}
	ipnet := "ip"
	if strings.HasSuffix(network, "4") || strings.HasSuffix(network, "6") {
		ipnet += network[len(network)-1:]
	}
	addrs, err := h.Resolver().LookupNetIP(ctx, ipnet, host)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, a := range addrs {
		c, err := dial(net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// Listen announces on the local network address inside h's namespace, as
// net.Listen does.
func (h *Handle) Listen(network, address string) (l net.Listener, err error) {
	err = h.do(func() error {
		l, err = net.Listen(network, address)
		return err
	}, false)
	return l, err
}

// ListenPacket announces on the local network address inside h's
// namespace, as net.ListenPacket does.
func (h *Handle) ListenPacket(network, address string) (c net.PacketConn, err error) {
	err = h.do(func() error {
		c, err = net.ListenPacket(network, address)
		return err
	}, false)
	return c, err
}

// Resolver returns a resolver that asks the name servers the namespace's
// commands ask: those of the resolv.conf in its EtcDir (which nat.Connect
// writes) or else of /etc/resolv.conf, over sockets made inside the
// namespace. It is Go's own resolver: its search domains and options are
// the host's /etc/resolv.conf, and /etc/hosts is the host's.
func (h *Handle) Resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			servers := h.nameServers()
			var errs []error
			for _, s := range servers {
				c, err := h.DialContext(ctx, network, netip.AddrPortFrom(s, 53).String())
				if err == nil {
					return c, nil
				}
				errs = append(errs, err)
			}
			return nil, errors.Join(errs...)
		},
	}
}

// nameServers are the servers the namespace's commands use, as glibc
// finds them: 127.0.0.1 when none is named.
func (h *Handle) nameServers() []netip.Addr {
	path := "/etc/resolv.conf"
	if dir := EtcDir(h); dir != "" {
		if p := filepath.Join(dir, "resolv.conf"); fileExists(p) {
			path = p
		}
	}
	conf, _ := resolv.Read(path)
	if len(conf.Servers) == 0 {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	}
	return conf.Servers
}
