package filexfer

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/fleetjob/fleetjob/internal/osaccount"
	"github.com/fleetjob/fleetjob/schemas"
)

// copyBufSize is the buffer a download streams through.
const copyBufSize = 256 << 10

// maxGet bounds one object download when ctx has no deadline. The object
// store client otherwise bounds the whole download by its default API
// timeout (5s unless set; nats.go #1850), which large files outlast. It is
// the longest a step may run.
const maxGet = 24 * time.Hour

// Download writes each entry's object into the directory dest (absolute;
// created 0755 when missing) under the entry's Name, streaming it and
// checking its SHA-256 against the entry (and the store's own digest)
// before the file appears. Each file is written to a temporary file in
// dest, fsynced, given mode (when nil, the entry's Mode) and owner (when
// not empty: an account name; setting another account needs root), and
// renamed into place, so a reader never sees a partial file. All access
// goes through an os.Root on dest: a name that is not a single path element
// is refused (ErrBadName), and so is a name that exists as a directory, a
// special file or a symlink that leaves dest or dangles (ErrUnsafeTarget);
// a symlink to a regular file inside dest is replaced by the file.
//
// progress (may be nil) gets, on the calling goroutine, status 3
// (downloading) records at most every ProgressEvery and one final record
// per file, status 4 or 5, with DestHost self. Download goes on past a
// failed file and returns the failures joined; entries sharing a name are
// refused before anything is written (ErrNameConflict).
func Download(ctx context.Context, obs Objects, entries []schemas.FileEntry, dest string, self schemas.Host,
	mode *uint32, owner string, limitBytesPerSec int64, progress func(schemas.FileLog)) error {
	return DownloadAs(ctx, nil, obs, entries, dest, self, mode, owner, limitBytesPerSec, progress)
}

// DownloadAs is Download done as the destination's account: every
// filesystem call (creating dest and its parents, opening it, creating,
// renaming and removing files in it, inspecting existing names) runs with
// the credentials of as (nil: the agent itself), so the files and the
// directories it creates belong to that user, a directory the user may
// not write into refuses the file, and a symlink on the way is followed
// only where the user could follow it. Give owner "" with an account:
// its files are already its own.
func DownloadAs(ctx context.Context, as *osaccount.Worker, obs Objects, entries []schemas.FileEntry, dest string,
	self schemas.Host, mode *uint32, owner string, limitBytesPerSec int64, progress func(schemas.FileLog)) error {
	reps := make([]*reporter, len(entries))
	for i, e := range entries {
		dp := dest
		if ValidName(e.Name) == nil {
			dp = filepath.Join(dest, e.Name)
		}
		reps[i] = &reporter{fn: progress, verb: "Download", ing: "Downloading",
			what: fmt.Sprintf("%s:%s to %s", e.SourceHost, e.SourcePath, dp),
			base: schemas.FileLog{Mode: schemas.FileModeDownload, SourceHost: e.SourceHost, SourcePath: e.SourcePath,
				DestHost: self, DestPath: dp, Size: e.Size}}
	}
	failAll := func(err error) error {
		for _, r := range reps {
			r.finish(NewMeter(0, ProgressEvery), err, "")
		}
		return err
	}
	if !filepath.IsAbs(dest) {
		return failAll(fmt.Errorf("destination %q is not an absolute path", dest))
	}
	if err := CheckNames(entries); err != nil {
		return failAll(err)
	}
	uid, gid, err := lookupOwner(owner)
	if err != nil {
		return failAll(err)
	}
	var root *os.Root
	err = as.Do(func() error {
		if err := os.MkdirAll(dest, 0o755); err != nil {
			return fmt.Errorf("create destination%s: %w", asWho(as), err)
		}
		if root, err = os.OpenRoot(dest); err != nil {
			return fmt.Errorf("open destination%s: %w", asWho(as), err)
		}
		return nil
	})
	if err != nil {
		return failAll(err)
	}
	defer root.Close()

	var errs []error
	buf := make([]byte, copyBufSize)
	for i, e := range entries {
		m := NewMeter(e.Size, ProgressEvery)
		err := downloadOne(ctx, as, obs, root, e, mode, uid, gid, limitBytesPerSec, buf, m, reps[i])
		reps[i].finish(m, err, "")
		if err != nil {
			errs = append(errs, fmt.Errorf("download %s to %s: %w", e.Object, reps[i].base.DestPath, err))
		}
	}
	_ = as.Do(func() error {
		if d, err := root.Open("."); err == nil {
			// Make the renames durable; failing to is not worth failing files for.
			_ = d.Sync()
			_ = d.Close()
		}
		return nil
	})
	return errors.Join(errs...)
}

func downloadOne(ctx context.Context, as *osaccount.Worker, obs Objects, root *os.Root, e schemas.FileEntry, mode *uint32,
	uid, gid int, limit int64, buf []byte, m *Meter, rep *reporter) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidName(e.Name); err != nil {
		return err
	}
	if err := as.Do(func() error { return checkTarget(root, e.Name) }); err != nil {
		return err
	}
	want, err := hex.DecodeString(e.SHA256)
	if err != nil || len(want) != sha256.Size {
		return fmt.Errorf("entry sha256 %q is not a hex SHA-256", e.SHA256)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, maxGet)
		defer cancel()
	}
	res, err := obs.Get(ctx, e.Object)
	if err != nil {
		return fmt.Errorf("get object: %w", err)
	}
	defer res.Close()
	info, err := res.Info()
	if err != nil {
		return fmt.Errorf("get object: %w", err)
	}
	if int64(info.Size) != e.Size {
		return fmt.Errorf("object holds %d bytes, entry says %d: %w", info.Size, e.Size, ErrChecksum)
	}
	rep.tick(m, schemas.FileDownloading)

	tmp := tempName(e.Name)
	var f *os.File
	if err := as.Do(func() (err error) {
		f, err = root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		return err
	}); err != nil {
		return fmt.Errorf("create temporary file%s: %w", asWho(as), err)
	}
	defer func() {
		if f != nil {
			_ = f.Close()
		}
		if err != nil {
			_ = as.Do(func() error { return root.Remove(tmp) })
		}
	}()

	h := sha256.New()
	r := &meterReader{r: limitReader(ctx, res, limit), m: m,
		tick: func() { rep.tick(m, schemas.FileDownloading) }}
	n, err := io.CopyBuffer(io.MultiWriter(f, h), r, buf)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	sum := h.Sum(nil)
	if n != e.Size {
		return fmt.Errorf("got %d bytes, want %d: %w", n, e.Size, ErrChecksum)
	}
	if !bytes.Equal(sum, want) {
		return fmt.Errorf("content sha256 %x, entry says %s: %w", sum, e.SHA256, ErrChecksum)
	}
	if err := sameDigest(info.Digest, sum); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if uid >= 0 {
		if err := f.Chown(uid, gid); err != nil {
			return fmt.Errorf("set owner: %w", err)
		}
	}
	perm := e.Mode
	if mode != nil {
		perm = *mode
	}
	// After Chown, which may clear setuid; as the account, whose rules
	// decide which of setuid and setgid it may keep.
	if err := as.Do(func() error { return f.Chmod(goMode(perm)) }); err != nil {
		return fmt.Errorf("set mode: %w", err)
	}
	cerr := f.Close()
	f = nil
	if cerr != nil {
		return fmt.Errorf("close: %w", cerr)
	}
	if err := as.Do(func() error { return root.Rename(tmp, e.Name) }); err != nil {
		return fmt.Errorf("rename into place%s: %w", asWho(as), err)
	}
	return nil
}

// asWho is " as <user>" for a worker acting as an account, for errors.
func asWho(as *osaccount.Worker) string {
	if as.Name() == "" {
		return ""
	}
	return " as " + as.Name()
}

// checkTarget refuses a name that exists as anything but a regular file or
// a symlink resolving, inside the root, to one. (The rename that follows
// replaces a symlink rather than writing through it, and os.Root would
// refuse to follow one out of dest anyway; this makes the refusal loud.)
func checkTarget(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect %s: %w", name, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := root.Stat(name)
		if err != nil {
			return fmt.Errorf("%s is a symlink leaving the destination or dangling (%v): %w", name, err, ErrUnsafeTarget)
		}
		fi = target
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s exists and is not a regular file (%s): %w", name, fi.Mode().Type(), ErrUnsafeTarget)
	}
	return nil
}

// tempName is a fresh hidden name for a file being written: it keeps up to
// 40 bytes of the final name (cut on a character boundary) for whoever
// looks at the directory meanwhile.
func tempName(name string) string {
	short := name
	if len(short) > 40 {
		short = short[:40]
		for len(short) > 0 && !utf8.ValidString(short) {
			short = short[:len(short)-1]
		}
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return ".fleetjob-" + short + "-" + hex.EncodeToString(b[:]) + ".tmp"
}

// lookupOwner resolves an account to its uid and primary gid; -1, -1 when
// owner is empty. Giving files to another account needs root.
func lookupOwner(owner string) (uid, gid int, err error) {
	if owner == "" {
		return -1, -1, nil
	}
	u, err := user.Lookup(owner)
	if err != nil {
		return -1, -1, fmt.Errorf("owner %q: %w", owner, err)
	}
	if uid, err = strconv.Atoi(u.Uid); err != nil {
		return -1, -1, fmt.Errorf("owner %q: uid %q: %w", owner, u.Uid, err)
	}
	if gid, err = strconv.Atoi(u.Gid); err != nil {
		return -1, -1, fmt.Errorf("owner %q: gid %q: %w", owner, u.Gid, err)
	}
	if euid := os.Geteuid(); euid != 0 && euid != uid {
		return -1, -1, fmt.Errorf("owner %q: only root can give files to another account: %w", owner, os.ErrPermission)
	}
	return uid, gid, nil
}
