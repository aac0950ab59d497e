// Package filexfer is the agent side of file distribution. A source agent
// resolves paths (Resolve) and uploads the files once into the JetStream
// object store (Upload); every target agent downloads them into one
// destination directory (Download), verifying SHA-256 and writing each file
// atomically, never outside that directory. Both sides report per-file
// transfer records in BlueKing's shape (schemas.FileLog) through a callback.
package filexfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
)

// Objects is what a transfer reads and writes objects through: the parts
// of a jetstream.ObjectStore it uses, so a store itself serves (the
// relay's side, tests), and so does an agent's relay client, which reaches
// only the objects of its own task.
type Objects interface {
	Get(ctx context.Context, name string, opts ...jetstream.GetObjectOpt) (jetstream.ObjectResult, error)
	GetInfo(ctx context.Context, name string, opts ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error)
	Put(ctx context.Context, meta jetstream.ObjectMeta, r io.Reader) (*jetstream.ObjectInfo, error)
}

var (
	// ErrBadName marks a destination name that is not a single path element.
	ErrBadName = errors.New("not a single file name")
	// ErrNameConflict marks two files that would land under the same name.
	ErrNameConflict = errors.New("file name conflict")
	// ErrChecksum marks content that does not match its SHA-256 digest.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrUnsafeTarget marks a destination name that exists as something
	// other than a regular file (a symlink leaving the destination, a
	// directory, a device…).
	ErrUnsafeTarget = errors.New("unsafe destination")
)

// Metadata keys Upload sets on objects.
const (
	MetaMode   = "fleetjob-mode"   // octal permission bits of the source
	MetaSource = "fleetjob-source" // "<cloud>:<ip>:<path>"
)

// ValidName reports whether name can be written under a destination
// directory: one path element, not "", "." or "..", without "/" or NUL.
func ValidName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%q: %w", name, ErrBadName)
	}
	return nil
}

// CheckNames reports every destination name that more than one entry would
// write; the error wraps ErrNameConflict.
func CheckNames(entries []schemas.FileEntry) error {
	first := make(map[string]int, len(entries))
	var errs []error
	for i, e := range entries {
		j, dup := first[e.Name]
		if !dup {
			first[e.Name] = i
			continue
		}
		a := entries[j]
		errs = append(errs, fmt.Errorf("%q from %s:%s and %s:%s: %w",
			e.Name, a.SourceHost, a.SourcePath, e.SourceHost, e.SourcePath, ErrNameConflict))
	}
	return errors.Join(errs...)
}

// ObjectName is the object an absolute source path is stored under:
// prefix, "/", and the path without its leading slash, with every byte
// outside [A-Za-z0-9._/-] percent-encoded (so distinct paths never share an
// object). The prefix should name the job, step and source host
// (say "job/12/0/0:10.0.0.7"): the same path on two hosts is two objects.
func ObjectName(prefix, absPath string) string {
	p := strings.TrimLeft(absPath, "/")
	var b strings.Builder
	if prefix = strings.Trim(prefix, "/"); prefix != "" {
		b.WriteString(prefix)
		b.WriteByte('/')
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '/', c == '-':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// unixMode turns a Go file mode into Unix permission bits (with setuid,
// setgid and sticky), the form FileEntry.Mode carries.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// goMode is the inverse of unixMode.
func goMode(u uint32) os.FileMode {
	m := os.FileMode(u & 0o777)
	if u&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if u&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if u&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

// parseMode reads an octal mode from object metadata.
func parseMode(s string) (uint32, bool) {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o7777 {
		return 0, false
	}
	return uint32(v), true
}
