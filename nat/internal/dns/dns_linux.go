package dns

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/nsnet/nsnet/internal/resolv"
	"github.com/nsnet/nsnet/nat/internal/naterr"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/netns"
)

// The host's resolver configuration (variables for tests).
var (
	HostResolvConf = "/etc/resolv.conf"
	ResolvedConf   = "/run/systemd/resolve/resolv.conf" // systemd-resolved's upstream servers
)

// resolvedStub is systemd-resolved's stub listener.
var resolvedStub = netip.MustParseAddr("127.0.0.53")

// CheckServers checks the servers of Servers mode.
func CheckServers(servers []netip.Addr) error {
	if len(servers) == 0 {
		return fmt.Errorf("%w: DNS: DNSServers without Config.DNSServers", naterr.ErrInvalidConfig)
	}
	for _, s := range servers {
		if !s.IsValid() || s.IsUnspecified() || s.IsMulticast() {
			return fmt.Errorf("%w: DNS server %v", naterr.ErrInvalidConfig, s)
		}
	}
	return nil
}

// Mode is how names resolve in a connected namespace (nat.DNSMode).
type Mode int

// The modes, as nat.Config.DNS names them.
const (
	Auto Mode = iota
	Servers
	Relay
	None
)

// Plan is what Connect will do about DNS, decided before it touches the
// kernel.
type Plan struct {
	conf     resolv.Conf // to write (servers; for a relay, filled in later)
	write    bool
	upstream netip.Addr // relay to this loopback resolver; invalid if no relay
	auto     bool       // Auto: where nothing can be written, go on without
}

// Writes reports whether the plan writes a resolv.conf.
func (p Plan) Writes() bool { return p.write }

// Decide decides, from the host's files, what the namespace gets with
// mode (servers: Servers' servers, checked by the caller); an IPv6-only
// link (v4 false) reaches only IPv6 servers.
func Decide(mode Mode, servers []netip.Addr, v4 bool) (Plan, error) {
	host, err := resolv.Read(HostResolvConf)
	missing := errors.Is(err, os.ErrNotExist)
	if err != nil && !missing {
		return Plan{}, fmt.Errorf("dns: %w", err)
	}
	switch mode {
	case None:
		return Plan{}, nil
	case Servers:
		conf := host
		conf.Servers = nil
		for _, s := range servers {
			conf.Servers = append(conf.Servers, s.Unmap())
		}
		return Plan{conf: conf, write: true}, nil
	case Relay:
		return Plan{conf: host, write: true, upstream: loopbackServer(host)}, nil
	}
	if missing {
		return Plan{}, nil
	}
	reachable := func(c resolv.Conf) resolv.Conf {
		r := c.Reachable()
		if !v4 {
			r.Servers = slices.DeleteFunc(r.Servers, netip.Addr.Is4)
		}
		return r
	}
	if r := reachable(host); len(r.Servers) > 0 {
		return Plan{conf: r, write: true, auto: true}, nil
	}
	// Only loopback servers (or none): systemd-resolved's upstream file,
	// if it names servers the namespace can reach, or else a relay.
	if up, err := resolv.Read(ResolvedConf); err == nil {
		if r := reachable(up); len(r.Servers) > 0 {
			if len(r.Search) == 0 {
				r.Search = host.Search
			}
			return Plan{conf: r, write: true, auto: true}, nil
		}
	}
	return Plan{conf: host, write: true, upstream: loopbackServer(host), auto: true}, nil
}

// loopbackServer is the host resolver a relay forwards to: the first
// loopback server of conf, or systemd-resolved's stub.
func loopbackServer(conf resolv.Conf) netip.Addr {
	for _, s := range conf.Servers {
		if s.IsLoopback() {
			return s
		}
	}
	return resolvedStub
}

// dnsFile is a resolv.conf written for a link, and the directory made for
// it ("" if it was there).
type dnsFile struct {
	path, madeDir string
	content       []byte
}

// writeResolvConf writes conf for the link into dir, unless a
// resolv.conf is there already (the user's: kept, and nothing written).
func writeResolvConf(dir string, conf resolv.Conf, mark string) (dnsFile, error) {
	if dir == "" {
		return dnsFile{}, fmt.Errorf("dns: %w", netns.ErrClosed)
	}
	f := dnsFile{path: filepath.Join(dir, "resolv.conf")}
	f.content = conf.Format(mark + ": removed when the link is closed")
	m, _ := owner.Parse(mark)
	made, err := createDirWhole(dir, "resolv.conf", f.content, m)
	if made {
		f.madeDir = dir
	} else if err == nil {
		err = createWhole(f.path, f.content, m)
	}
	if errors.Is(err, os.ErrExist) {
		return dnsFile{}, nil // the user's own: left as it is
	}
	if err != nil {
		f.remove()
		return dnsFile{}, fmt.Errorf("dns: %w", err)
	}
	return f, nil
}

// remove deletes the file if it still holds what was written, and the
// directory if it was made for it and is empty.
func (f dnsFile) remove() error {
	var err error
	if f.path != "" {
		if b, rerr := os.ReadFile(f.path); rerr == nil && bytes.Equal(b, f.content) {
			err = os.Remove(f.path)
		} else if errors.Is(rerr, os.ErrNotExist) {
			err = fmt.Errorf("dns: %s already gone: %w", f.path, os.ErrNotExist)
		}
	}
	if f.madeDir != "" {
		os.Remove(f.madeDir) // only if empty
	}
	return err
}

// Sweep removes the resolv.conf files that owners no longer
// running wrote for links in host (and the directories they made, if
// empty). The files are the file system's, shared by every host
// namespace, but owners are known live only per host namespace: the mark
// says which host the link was in ("host=ID"), and only that host's are
// judged.
//
// Temporary files a dead owner left while writing one (see createWhole)
// go too.
func Sweep(host *netns.Handle) (int, error) {
	hostMark := fmt.Sprintf(" host=%d ", host.ID())
	var dirs []string
	for _, root := range []string{netns.EtcRoot, netns.AnonEtcRoot} {
		d, _ := filepath.Glob(filepath.Join(root, "*"))
		dirs = append(dirs, d...)
	}
	paths, ids := temps(append(dirs, netns.EtcRoot, netns.AnonEtcRoot), host.ID())
	tmps := len(paths)
	for _, dir := range dirs {
		p := filepath.Join(dir, "resolv.conf")
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		first, _, _ := strings.Cut(string(b), "\n")
		if o, ok := owner.Parse(strings.TrimPrefix(first, "# ")); ok && strings.Contains(first, hostMark) {
			paths, ids = append(paths, p), append(ids, o.ID)
		}
	}
	if len(ids) == 0 {
		return 0, nil
	}
	live, err := owner.Live(host, ids)
	if err != nil {
		return 0, err
	}
	n := 0
	for i, p := range paths {
		if !live[ids[i]] && os.RemoveAll(p) == nil { // (a file, or a temporary directory)
			if d := filepath.Dir(p); d != netns.EtcRoot && d != netns.AnonEtcRoot {
				os.Remove(d) // only if empty
			}
			if i >= tmps {
				n++ // (temporary files are not counted)
			}
		}
	}
	return n, nil
}

// Setup is a link's DNS: its relay, if it has one, and the resolv.conf
// written for it. Its methods are not safe for concurrent use (the link's
// lock guards it).
type Setup struct {
	relay *relay
	file  dnsFile
}

// Start starts the link's relay, if the plan has one, on hostAddr in host
// for the clients of prefix, and writes the namespace's resolv.conf into
// etcDir, its first line naming mark; own, if set, is told of each of the
// relay's connections to the resolver (see Owner). A resolver already listening on
// every address of the host (port 53 taken) answers the namespace itself:
// no relay. A failure leaves nothing.
func Start(plan Plan, host *netns.Handle, etcDir string, hostAddr netip.Addr, prefix netip.Prefix, mark string, own Owner) (*Setup, error) {
	s := &Setup{}
	if plan.upstream.IsValid() {
		r, err := startRelay(host, hostAddr, plan.upstream, prefix, own)
		if err != nil && !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("relay: %w", err)
		}
		s.relay = r
		plan.conf.Servers = []netip.Addr{hostAddr}
	}
	f, err := writeResolvConf(etcDir, plan.conf, mark)
	if err != nil && plan.auto && (errors.Is(err, syscall.EROFS) || errors.Is(err, os.ErrPermission)) {
		// A read-only /etc (many containers): the namespace resolves as
		// the host does, which Auto can live with.
		s.Stop()
		return &Setup{}, nil
	}
	if err != nil {
		s.Stop()
		return nil, err
	}
	s.file = f
	return s, nil
}

// Stop stops the relay and removes the resolv.conf; a file someone else
// removed meanwhile is an error matching os.ErrNotExist. A nil Setup has
// nothing to stop. Idempotent.
func (s *Setup) Stop() error {
	if s == nil {
		return nil
	}
	if s.relay != nil {
		s.relay.close()
		s.relay = nil
	}
	err := s.file.remove()
	s.file = dnsFile{}
	return err
}
