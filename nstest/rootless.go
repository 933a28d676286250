package nstest

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

// What the privileged tests of a run did, for the line report prints.
var (
	countMu  sync.Mutex
	required = map[string]bool{}     // tests (top-level) that called Require inside a private world
	skipped  = map[string][]string{} // SkipRootless reason: tests
	// skippedOther: top-level tests that skipped after Require for
	// another reason (SkipRootless's included), each counted once.
	skippedOther = map[string]bool{}
)

// Rootless reports whether the private world was made without root: in
// a user namespace of its own, where the process holds every capability
// over the world's network and mount namespaces but is an ordinary user
// to everything else on the machine (files owned by root, other users'
// processes, kernel modules).
func Rootless() bool { return rootless }

// SkipRootless skips t in a rootless private world, saying why it cannot
// run there (why names what a user namespace lacks), and does nothing
// otherwise. Such skips are counted and listed at the end of the run;
// NSNET_REQUIRE_PRIVILEGED does not turn them into failures: the same
// tests run in the root pass.
func SkipRootless(t testing.TB, why string) {
	t.Helper()
	if !rootless {
		return
	}
	countMu.Lock()
	skipped[why] = append(skipped[why], t.Name())
	countMu.Unlock()
	t.Skipf("cannot run in a user namespace: %s", why)
}

// countRequired notes that t's test is privileged (its subtests and
// helpers count once, under the top-level name).
func countRequired(t testing.TB) {
	name, _, sub := strings.Cut(t.Name(), "/")
	countMu.Lock()
	required[name] = true
	countMu.Unlock()
	if !sub {
		// A test that skips after Require (a kernel without a module, a
		// missing tool) did not run either.
		t.Cleanup(func() {
			if t.Skipped() {
				countMu.Lock()
				skippedOther[name] = true
				countMu.Unlock()
			}
		})
	}
}

// report prints how many privileged tests ran, and which could not run
// rootless and why (shown by go test -v, and when a package fails).
func report() {
	countMu.Lock()
	defer countMu.Unlock()
	n := len(required)
	if n == 0 {
		return
	}
	mode := "as root"
	if rootless {
		mode = "rootless (in a user namespace)"
	}
	var lines []string
	userNS := map[string]bool{} // top-level tests SkipRootless skipped as a whole
	for why, tests := range skipped {
		for _, t := range tests {
			if !strings.Contains(t, "/") {
				userNS[t] = true
			}
		}
		lines = append(lines, fmt.Sprintf("nstest:   %s: %s", strings.Join(tests, ", "), why))
	}
	slices.Sort(lines)
	all := map[string]bool{}
	for name := range skippedOther {
		all[name] = true
	}
	for name := range userNS {
		all[name] = true
	}
	fmt.Fprintf(os.Stdout, "nstest: %d of %d privileged tests ran %s, %d skipped (go test -v says why)\n", n-len(all), n, mode, len(all))
	if rootless {
		// What a user namespace cannot do, apart from what this machine
		// lacks for root as well (a kernel module, a tool).
		fmt.Fprintf(os.Stdout, "nstest: rootless: %d of %d privileged tests can run in a user namespace (%.1f%%)\n",
			n-len(userNS), n, 100*float64(n-len(userNS))/float64(n))
	}
	for _, l := range lines {
		fmt.Fprintln(os.Stdout, l)
	}
}
