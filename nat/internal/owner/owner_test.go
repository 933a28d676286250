package owner

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMarkRoundTrip(t *testing.T) {
	for _, m := range []Mark{
		{ID: "abcdefghij01", PID: 7},
		{ID: "abcdefghij01", PID: 7, Link: "nsn-x"},
		{ID: "abcdefghij01", PID: 7, Host: 4026531840, Link: "nsn-x"},
		{ID: "abcdefghij01", PID: 7, Link: "nsn-x", Index: 536870913},
		{ID: PersistentID, PID: 1, Orig: "off"},
		{ID: PersistentID, PID: 1, Link: "veth1", Tag: "pod a b=c"},
	} {
		got, ok := Parse(m.String())
		if !ok {
			t.Fatalf("Parse(%q) failed", m)
		}
		if diff := cmp.Diff(m, got); diff != "" {
			t.Errorf("Parse(%q) (-want +got):\n%s", m, diff)
		}
	}
}

// TestMarkFormat: the marks other processes (and older versions) read,
// byte for byte.
func TestMarkFormat(t *testing.T) {
	for want, m := range map[string]Mark{
		"nsnet owner=abcdefghij01 pid=7":                            {ID: "abcdefghij01", PID: 7},
		"nsnet owner=abcdefghij01 pid=7 link=nsn-x":                 {ID: "abcdefghij01", PID: 7, Link: "nsn-x"},
		"nsnet owner=abcdefghij01 pid=7 host=9 link=nsn-x":          {ID: "abcdefghij01", PID: 7, Host: 9, Link: "nsn-x"},
		"nsnet owner=abcdefghij01 pid=7 link=nsn-x index=3":         {ID: "abcdefghij01", PID: 7, Link: "nsn-x", Index: 3},
		"nsnet owner=abcdefghij01 pid=7 orig=off":                   {ID: "abcdefghij01", PID: 7, Orig: "off"},
		"nsnet owner=persistent00 pid=7 link=veth1 tag=my pod tag=": {ID: PersistentID, PID: 7, Link: "veth1", Tag: "my pod tag="},
	} {
		if got := m.String(); got != want {
			t.Errorf("%+v: %q, want %q", m, got, want)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, s := range []string{"", "nsnet", "nsnet owner=short pid=1", "nsnet owner=ABCDEFGHIJ01 pid=1",
		"docker owner=abcdefghij01 pid=1", "nsnet pid=1 owner=abcdefghij01", "nsnet: forward"} {
		if m, ok := Parse(s); ok {
			t.Errorf("Parse(%q) = %+v, want no mark", s, m)
		}
	}
}

// FuzzParse: whatever Parse accepts formats back to a mark that parses to
// the same value.
func FuzzParse(f *testing.F) {
	f.Add("nsnet owner=abcdefghij01 pid=7 host=9 link=nsn-x index=3 orig=on tag=a b")
	f.Add("nsnet owner=persistent00 pid=1 link=v tag=")
	f.Fuzz(func(t *testing.T, s string) {
		m, ok := Parse(s)
		if !ok {
			return
		}
		if strings.ContainsAny(m.Link+m.Orig, " \t\n\v\f\r\u0085\u00a0") || strings.Contains(m.Tag, " tag=") {
			return // not a value the library writes
		}
		if m.Link == "" && strings.Contains(s, " link=") || m.Orig == "" && strings.Contains(s, " orig=") {
			return
		}
		again, ok := Parse(m.String())
		if !ok {
			t.Fatalf("Parse(%q) = %+v, whose String %q does not parse", s, m, m.String())
		}
		if diff := cmp.Diff(m, again); diff != "" {
			t.Fatalf("round trip of %q (-first +second):\n%s", s, diff)
		}
	})
}
