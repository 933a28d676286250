package dns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nsnet/nsnet/nat/internal/owner"
	"golang.org/x/sys/unix"
)

// Hook, set by nat's tests through nat's own hook, is called at the steps
// of writing a file ("resolv.conf written": whole, not yet in place;
// "resolv.conf linked": in place, its temporary name not yet removed), so
// that a test can kill the process there.
var Hook = func(step string) error { return nil }

// NoTmpfile makes createWhole use a named temporary file, as on a file
// system without O_TMPFILE (a variable for tests).
var NoTmpfile = false

// tmpPrefix starts the names of temporary files; "OWNER-HOST-" follows
// (the owner ID and the host namespace's ID, from the link's mark), so
// that Sweep can tell a dead owner's.
const tmpPrefix = ".nsnet-tmp-"

// createWhole creates path with content, so that it appears whole or not
// at all, however the process ends, and never replaces a file that is
// there (os.ErrExist). The content goes into an unnamed file in the same
// directory (O_TMPFILE), which is then linked in place: if the process
// dies before, the kernel frees the unnamed file and nothing is left.
// Where the file system has no O_TMPFILE, a temporary file named after the
// owner is linked instead, then removed; Sweep removes a dead owner's.
func createWhole(path string, content []byte, mark owner.Mark) error {
	dir := filepath.Dir(path)
	if !NoTmpfile {
		fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err == nil {
			f := os.NewFile(uintptr(fd), path)
			defer f.Close()
			if err := writeAll(f, content); err != nil {
				return err
			}
			if err := Hook("resolv.conf written"); err != nil {
				return err
			}
			// linkat of /proc/self/fd/N with AT_SYMLINK_FOLLOW needs no
			// capability (AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH).
			err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
			if err != nil {
				return &os.LinkError{Op: "link", Old: "(unnamed)", New: path, Err: err}
			}
			return Hook("resolv.conf linked")
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
			return &os.PathError{Op: "open", Path: dir, Err: err}
		}
	}
	tmp := tmpName(dir, mark)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	err = writeAll(f, content)
	if err = errors.Join(err, f.Close()); err != nil {
		return err
	}
	if err := Hook("resolv.conf written"); err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	return Hook("resolv.conf linked")
}

// createDirWhole makes dir, holding the file name with content, so that
// it appears whole or not at all: a temporary directory named as
// createWhole's temporary files, in dir's parent (made if missing), moved
// into place with RENAME_NOREPLACE. made is false, with no error, when
// dir exists already (the caller writes into it); Sweep removes a dead
// owner's temporary directory.
func createDirWhole(dir, name string, content []byte, mark owner.Mark) (made bool, err error) {
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return false, err
	}
	tmp := tmpName(parent, mark)
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return false, err
	}
	defer os.RemoveAll(tmp) // (gone by then when moved)
	if err := os.WriteFile(filepath.Join(tmp, name), content, 0o644); err != nil {
		return false, err
	}
	if err := Hook("resolv.conf written"); err != nil {
		return false, err
	}
	err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) {
		return false, nil // made meanwhile: write into it
	}
	if err != nil {
		return false, &os.LinkError{Op: "rename", Old: tmp, New: dir, Err: err}
	}
	return true, Hook("resolv.conf linked")
}

// tmpName is a new temporary name in dir for the owner of mark (see
// tmpPrefix; temps reads it back).
func tmpName(dir string, mark owner.Mark) string {
	return filepath.Join(dir, fmt.Sprintf("%s%s-%d-%s", tmpPrefix, mark.ID, mark.Host, owner.RandomString(8)))
}

func writeAll(f *os.File, content []byte) error {
	_, err := f.Write(content)
	return err
}

// temps finds the temporary files of host's owners in dirs, with their
// owners' IDs.
func temps(dirs []string, host uint64) (paths, ids []string) {
	for _, dir := range dirs {
		found, _ := filepath.Glob(filepath.Join(dir, tmpPrefix+"*"))
		for _, t := range found {
			f := strings.SplitN(strings.TrimPrefix(filepath.Base(t), tmpPrefix), "-", 3)
			if len(f) == 3 && f[1] == fmt.Sprint(host) {
				paths, ids = append(paths, t), append(ids, f[0])
			}
		}
	}
	return paths, ids
}
