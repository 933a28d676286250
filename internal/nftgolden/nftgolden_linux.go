package nftgolden

import (
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// nftMsgNames names the nf_tables message types the golden files show.
var nftMsgNames = map[uint16]string{
	unix.NFT_MSG_NEWTABLE: "NEWTABLE", unix.NFT_MSG_NEWCHAIN: "NEWCHAIN", unix.NFT_MSG_NEWRULE: "NEWRULE",
	unix.NFT_MSG_NEWSET: "NEWSET", unix.NFT_MSG_NEWSETELEM: "NEWSETELEM", unix.NFT_MSG_DELRULE: "DELRULE",
}

// Messages records what a google/nftables Conn sends while fn queues and
// flushes messages, as text: each message's type and flags, then its
// body in hex, 16 bytes a line. No kernel and no privilege are involved.
func Messages(t testing.TB, fn func(c *nftables.Conn) error) string {
	t.Helper()
	var b strings.Builder
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		for _, m := range req {
			typ := uint16(m.Header.Type)
			name := nftMsgNames[typ&0xff]
			switch {
			case typ == unix.NFNL_MSG_BATCH_BEGIN:
				name = "BATCH_BEGIN"
			case typ == unix.NFNL_MSG_BATCH_END:
				name = "BATCH_END"
			}
			fmt.Fprintf(&b, "# %s type=%#04x flags=%#04x\n", name, typ, uint16(m.Header.Flags))
			for i := 0; i < len(m.Data); i += 16 {
				fmt.Fprintln(&b, hex.EncodeToString(m.Data[i:min(i+16, len(m.Data))]))
			}
		}
		return nil, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := fn(c); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// Check compares got with testdata/name, or rewrites it with -update.
func Check(t testing.TB, name, got string) {
	t.Helper()
	path := "testdata/" + name
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -args -update in its package once)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("the messages differ from %s (if the change is meant, run go test -run %s -args -update in its package and review the diff):\n%s",
			path, t.Name(), firstDiff(string(want), got))
	}
}

func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range max(len(w), len(g)) {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, a, b)
		}
	}
	return ""
}
