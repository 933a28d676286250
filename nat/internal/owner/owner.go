package owner

import (
	"crypto/rand"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ID identifies this process to others (see the package doc).
var ID = RandomString(12)

// PersistentID is the owner of persistent links.
const PersistentID = "persistent00"

// Self is this process's mark; Persistent the persistent owner's.
var (
	Self       = Mark{ID: ID, PID: os.Getpid()}
	Persistent = Mark{ID: PersistentID, PID: os.Getpid()}
)

// RandomString returns n random characters of [a-z0-9].
func RandomString(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// Mark is what the library writes on everything it makes:
//
//	nsnet owner=ID pid=P [host=H] [link=L] [index=I] [orig=off|on] [tag=T]
//
// in that order; the tag, last, may hold spaces.
type Mark struct {
	ID   string // the owner's ID: 12 characters of [a-z0-9]
	PID  int    // for people only
	Host uint64 // the host namespace's ID (resolv.conf files: shared by hosts)
	// Link is the host end's name at Connect; Index its interface index
	// (DOCKER-USER rules, which match the name).
	Link  string
	Index int
	// Orig is the uplink's forwarding before its first nsnet user, on an
	// uplinks entry: "off" or "on".
	Orig string
	Tag  string // a persistent link's Config.Tag
}

// String formats m.
func (m Mark) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nsnet owner=%s pid=%d", m.ID, m.PID)
	if m.Host != 0 {
		fmt.Fprintf(&b, " host=%d", m.Host)
	}
	if m.Link != "" {
		b.WriteString(" link=" + m.Link)
	}
	if m.Index != 0 {
		fmt.Fprintf(&b, " index=%d", m.Index)
	}
	if m.Orig != "" {
		b.WriteString(" orig=" + m.Orig)
	}
	if m.Tag != "" {
		b.WriteString(" tag=" + m.Tag)
	}
	return b.String()
}

// Parse reads a mark; ok is false for anything that is not one (not
// nsnet's, or an owner ID of the wrong shape). Unknown fields are skipped:
// a later version may add some.
func Parse(s string) (m Mark, ok bool) {
	s, m.Tag, _ = strings.Cut(s, " tag=")
	f := strings.Fields(s)
	if len(f) < 2 || f[0] != "nsnet" {
		return Mark{}, false
	}
	id, found := strings.CutPrefix(f[1], "owner=")
	if !found || !validID(id) {
		return Mark{}, false
	}
	m.ID = id
	for _, field := range f[2:] {
		k, v, _ := strings.Cut(field, "=")
		switch k {
		case "pid":
			m.PID, _ = strconv.Atoi(v)
		case "host":
			m.Host, _ = strconv.ParseUint(v, 10, 64)
		case "link":
			m.Link = v
		case "index":
			m.Index, _ = strconv.Atoi(v)
		case "orig":
			m.Orig = v
		}
	}
	return m, true
}

func validID(id string) bool {
	return len(id) == 12 && strings.Trim(id, "abcdefghijklmnopqrstuvwxyz0123456789") == ""
}

// ParsePersistent reads a persistent link's mark; ok is false for any
// other.
func ParsePersistent(s string) (m Mark, ok bool) {
	m, ok = Parse(s)
	return m, ok && m.ID == PersistentID
}
