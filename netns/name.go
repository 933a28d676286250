package netns

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidName is matched (errors.Is) by the error for a namespace name that
// cannot be a file name directly under [Dir]. It is one value across nsnet:
// veth.ErrInvalidName, addr.ErrInvalidName, route.ErrInvalidName and
// nat.ErrInvalidName (for malformed interface names) are it, so a caller
// checks one of them whichever package returned the error.
var ErrInvalidName = errors.New("invalid name")

// ErrClosed is matched (errors.Is) by the error of any operation on a closed
// [Handle].
var ErrClosed = errors.New("namespace handle is closed")

// Dir is where named namespaces are bind-mounted, as iproute2 does.
const Dir = "/run/netns"

// maxNameLen is NAME_MAX, the longest file name a Linux file system takes.
const maxNameLen = 255

// ValidateName reports why name cannot be the name of a namespace under
// [Dir], or nil if it can. The error matches [ErrInvalidName].
func ValidateName(name string) error {
	var why string
	switch {
	case name == "":
		why = "empty"
	case name == "." || name == "..":
		why = "is . or .."
	case strings.ContainsRune(name, '/'):
		why = "contains /"
	case strings.IndexFunc(name, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0:
		why = "contains a control character (a newline would garble ip netns list)"
	case len(name) > maxNameLen:
		why = fmt.Sprintf("longer than %d bytes", maxNameLen)
	default:
		return nil
	}
	return fmt.Errorf("%w: namespace %q: %s", ErrInvalidName, name, why)
}
