package firewall

// Docker's DOCKER-USER chain (Config.DockerUser). On a Docker host with
// iptables-nft, Docker's ip filter FORWARD chain drops by policy and jumps
// to DOCKER-USER first, the chain Docker leaves to its users. A link with
// DockerUser gets two rules inserted at the top of DOCKER-USER:
//
//	-i HOSTVETH -j ACCEPT  (comment "nsnet owner=ID pid=P link=HOSTVETH index=N")
//	-o HOSTVETH -j ACCEPT
//
// in exactly the shapes iptables-nft makes (meta iifname, a compare of the
// name with its terminating zero, a counter, accept; the comment in the
// rule's userdata), so that "iptables -S", which Docker and its users run
// on that table, still reads it: a match iptables-nft cannot read back
// (ct state, ct mark, an index) would make it refuse the whole table. The
// rules only let the links' packets past Docker's chain; nsnet's own table
// still decides about them by interface index (out of their own uplink,
// replies back, nothing else). They are removed at Close, found by their
// comment, which no other rule has; Sweep removes those of dead owners.
//
// The rules match by name: a host end renamed while live loses Docker's
// accept (its traffic is dropped, never let through elsewhere), and a
// link of someone else's given that name would pass Docker's chain (not
// nsnet's, which knows only its own indexes). nsnet's names are random.

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"github.com/nsnet/nsnet/nat/internal/nftset"
	"github.com/nsnet/nsnet/nat/internal/owner"
	"github.com/nsnet/nsnet/netns"
	"golang.org/x/sys/unix"
)

// Docker's filter tables: ip filter, and ip6 filter where Docker
// manages IPv6 (ip6tables, the default since Docker 27). A link's rules
// go into the DOCKER-USER chain of each of its families.
var (
	dockerTable  = &nftables.Table{Family: nftables.TableFamilyIPv4, Name: "filter"}
	dockerTable6 = &nftables.Table{Family: nftables.TableFamilyIPv6, Name: "filter"}
	dockerTables = []*nftables.Table{dockerTable, dockerTable6}
)

const dockerUserChain = "DOCKER-USER"

// dockerTableOf is Docker's table of family fam (unix.NFPROTO_IPV4, _IPV6).
func dockerTableOf(fam byte) *nftables.Table {
	if fam == unix.NFPROTO_IPV6 {
		return dockerTable6
	}
	return dockerTable
}

func dockerUserIn(t *nftables.Table) *nftables.Chain {
	return &nftables.Chain{Table: t, Name: dockerUserChain}
}

// dockerFamilyName is "ip" or "ip6", as iptables and nft name the tables.
func dockerFamilyName(t *nftables.Table) string {
	if t.Family == nftables.TableFamilyIPv6 {
		return "ip6"
	}
	return "ip"
}

// DockerUserComment is the comment of a link's rules in DOCKER-USER.
func DockerUserComment(link string, index int) string {
	m := owner.Self
	m.Link, m.Index = link, index
	return m.String()
}

// dockerUserRules are the two accept rules for the host end name in
// Docker's table t.
func dockerUserRules(t *nftables.Table, name, comment string) []*nftables.Rule {
	var rules []*nftables.Rule
	for _, key := range []expr.MetaKey{expr.MetaKeyOIFNAME, expr.MetaKeyIIFNAME} {
		rules = append(rules, &nftables.Rule{Table: t, Chain: dockerUserIn(t),
			Exprs: []expr.Any{
				&expr.Meta{Key: key, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: append([]byte(name), 0)},
				&expr.Counter{},
				&expr.Verdict{Kind: expr.VerdictAccept},
			},
			UserData: userdata.AppendString(nil, userdata.TypeComment, comment)})
	}
	return rules
}

// AcceptInDockerUser inserts the rules of the link called name (whose
// comment, from DockerUserComment, names it) at the top of DOCKER-USER of
// Docker's tables of the families fams, in one transaction.
func AcceptInDockerUser(c *nftables.Conn, fams []byte, name, comment string) error {
	for _, fam := range fams {
		for _, r := range dockerUserRules(dockerTableOf(fam), name, comment) {
			c.InsertRule(r)
		}
	}
	err := c.Flush()
	if nftset.IsENOENT(err) {
		return fmt.Errorf("a %s chain of Docker's is gone: %w", dockerUserChain, err)
	}
	return err
}

// removeFromDockerUser deletes the rules of Docker's DOCKER-USER chains
// whose comment passes match, in one transaction, and returns how many it
// deleted. No chain is no error.
func removeFromDockerUser(c *nftables.Conn, match func(comment string) bool) (n int, err error) {
	for attempt := 0; ; attempt++ {
		n = 0
		for _, t := range dockerTables {
			rules, err := c.GetRules(t, dockerUserIn(t))
			if nftset.IsENOENT(err) {
				continue
			}
			if err != nil {
				return 0, err
			}
			for _, r := range rules {
				if s, ok := ruleComment(r); ok && match(s) {
					if err := c.DelRule(r); err != nil {
						return 0, err
					}
					n++
				}
			}
		}
		if n == 0 {
			return 0, nil
		}
		err = c.Flush()
		// ENOENT: one was deleted meanwhile (by a user, or a firewall
		// reload): look again.
		if !nftset.IsENOENT(err) || attempt == 2 {
			return n, err
		}
	}
}

// ruleComment is a rule's comment: in its userdata, as nsnet and nft
// write it, or in an xt comment match, as iptables-nft writes it back
// after "iptables-save | iptables-restore" (which Docker, firewall tools
// and admins run): nsnet's rules are its own in both encodings.
func ruleComment(r *nftables.Rule) (string, bool) {
	if s, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
		return s, true
	}
	for _, e := range r.Exprs {
		if m, ok := e.(*expr.Match); ok && m.Name == "comment" {
			if c, ok := m.Info.(*xt.Comment); ok {
				return string(*c), true
			}
		}
	}
	return "", false
}

// DropDockerUser removes the rules of the links whose comments are given,
// with the number of rules each had when made (two per family), which
// must be there: fewer found is an error matching os.ErrNotExist. (More
// is no error: the guard adds a link's rules where Docker made its chain
// after the link.)
func DropDockerUser(c *nftables.Conn, comments map[string]int) error {
	n, err := removeFromDockerUser(c, func(s string) bool { _, ok := comments[s]; return ok })
	want := 0
	for _, k := range comments {
		want += k
	}
	if err == nil && n < want {
		err = fmt.Errorf("%d of its %d rules in Docker's %s already gone: %w", want-n, want, dockerUserChain, os.ErrNotExist)
	}
	return err
}

// SweepDockerUser removes the DOCKER-USER rules of owners that no longer
// run.
func SweepDockerUser(host *netns.Handle, c *nftables.Conn) (int, error) {
	var ids []string
	for _, t := range dockerTables {
		rules, err := c.GetRules(t, dockerUserIn(t))
		if nftset.IsENOENT(err) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("%s %s: %w", dockerFamilyName(t), dockerUserChain, err)
		}
		for _, r := range rules {
			s, _ := ruleComment(r)
			if o, ok := dockerUserOwner(s); ok {
				ids = append(ids, o.ID)
			}
		}
	}
	if len(ids) == 0 {
		return 0, nil
	}
	live, err := owner.Live(host, ids)
	if err != nil {
		return 0, err
	}
	n, err := removeFromDockerUser(c, func(s string) bool {
		o, ok := dockerUserOwner(s)
		return ok && !live[o.ID]
	})
	if err != nil {
		err = fmt.Errorf("%s: %w", dockerUserChain, err)
	}
	return n, err
}

// dockerUserOwner reads the owner of one of nsnet's DOCKER-USER rules
// from its comment.
func dockerUserOwner(comment string) (owner.Mark, bool) {
	if !strings.Contains(comment, " link=") {
		return owner.Mark{}, false
	}
	return owner.Parse(comment)
}

// DockerUserLink is a live link whose rules RestoreDockerUser keeps in
// DOCKER-USER.
type DockerUserLink struct {
	Name, Comment string
	Fams          []byte // its families: its rules go where Docker's table has DOCKER-USER
}

// RestoreDockerUser puts back the DOCKER-USER rules of the live links
// that lack them (both of a link's in a table, or none: a firewall reload
// or a user's "iptables -F DOCKER-USER" removed them, Docker made the
// chain again, or Docker started after the link was made), in each of the
// link's families whose chain exists, in one transaction. Called by the guard when Docker's tables changed; the
// caller keeps the links from closing meanwhile.
func RestoreDockerUser(c *nftables.Conn, links []DockerUserLink) error {
	fixed := false
	for _, t := range dockerTables {
		rules, err := c.GetRules(t, dockerUserIn(t))
		if err != nil {
			continue // no chain (yet): nothing to put back
		}
		count := map[string]int{}
		for _, r := range rules {
			if s, ok := ruleComment(r); ok {
				count[s]++
			}
		}
		for _, w := range links {
			if count[w.Comment] == 2 || !slices.ContainsFunc(w.Fams, func(f byte) bool { return dockerTableOf(f) == t }) {
				continue
			}
			for _, r := range rules {
				if s, _ := ruleComment(r); s == w.Comment {
					c.DelRule(r)
				}
			}
			for _, r := range dockerUserRules(t, w.Name, w.Comment) {
				c.InsertRule(r)
			}
			fixed = true
		}
	}
	if !fixed {
		return nil
	}
	return c.Flush()
}
