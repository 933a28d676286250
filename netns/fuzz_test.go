package netns_test

import (
	"strings"
	"testing"

	"github.com/nsnet/nsnet/netns"
)

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"example-ns1", "", ".", "..", "a/b", "nul\x00", strings.Repeat("x", 256)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if netns.ValidateName(name) == nil &&
			(name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255) {
			t.Fatalf("accepted %q", name)
		}
	})
}
