package filexfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/osaccount"
	"github.com/fleetjob/fleetjob/schemas"
)

// Upload puts each file (absolute paths, as Resolve returns them) into the
// object store under ObjectName(prefix, file) (prefix names the job, step
// and source host, e.g. "job/12/0/0:10.0.0.7"), streaming it in the store's
// chunks and hashing it on the way, paced to limitBytesPerSec when that is
// above 0. A file already stored with the same size and digest is not sent
// again, so a retried upload redoes no work.
//
// progress (may be nil) gets, on the calling goroutine, status 2
// (uploading) records at most every ProgressEvery and one final record per
// file, status 4 or 5. Upload goes on past a failed file: it returns the
// entries of the files that made it, in order, and the failures joined.
// Entry names are base names; see CheckNames.
func Upload(ctx context.Context, obs Objects, prefix string, src schemas.Host, files []string,
	limitBytesPerSec int64, progress func(schemas.FileLog)) ([]schemas.FileEntry, error) {
	return UploadAs(ctx, nil, obs, prefix, src, files, limitBytesPerSec, progress)
}

// UploadAs is Upload that opens each file as the source's account: as
// (nil: the agent itself) opens it with that user's credentials, so a file
// the user may not read fails with permission denied; the open file is
// then read by the agent.
func UploadAs(ctx context.Context, as *osaccount.Worker, obs Objects, prefix string, src schemas.Host, files []string,
	limitBytesPerSec int64, progress func(schemas.FileLog)) ([]schemas.FileEntry, error) {
	var (
		entries []schemas.FileEntry
		errs    []error
	)
	for _, f := range files {
		rep := &reporter{fn: progress, verb: "Upload", ing: "Uploading", what: f,
			base: schemas.FileLog{Mode: schemas.FileModeUpload, SourceHost: src, SourcePath: f}}
		e, note, m, err := uploadOne(ctx, as, obs, prefix, src, f, limitBytesPerSec, rep)
		rep.finish(m, err, note)
		if err != nil {
			errs = append(errs, fmt.Errorf("upload %s: %w", f, err))
			continue
		}
		entries = append(entries, e)
	}
	return entries, errors.Join(errs...)
}

// uploadOne sends one file. The meter it returns is never nil, so the
// caller can report the outcome.
func uploadOne(ctx context.Context, as *osaccount.Worker, obs Objects, prefix string, src schemas.Host, file string,
	limit int64, rep *reporter) (e schemas.FileEntry, note string, m *Meter, err error) {
	m = NewMeter(0, ProgressEvery)
	if err := ctx.Err(); err != nil {
		return e, "", m, err
	}
	if !filepath.IsAbs(file) {
		return e, "", m, fmt.Errorf("%q is not an absolute path", file)
	}
	f, err := openAs(as, file)
	if err != nil {
		return e, "", m, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return e, "", m, err
	}
	if !fi.Mode().IsRegular() {
		return e, "", m, fmt.Errorf("%s is not a regular file", file)
	}
	m = NewMeter(fi.Size(), ProgressEvery)
	rep.base.Size = fi.Size()
	e = schemas.FileEntry{SourceHost: src, SourcePath: file, Object: ObjectName(prefix, file),
		Name: filepath.Base(file), Mode: unixMode(fi.Mode())}
	rep.tick(m, schemas.FileUploading)

	stored, sum, err := alreadyStored(ctx, obs, e.Object, f, fi.Size())
	if err != nil {
		return e, "", m, err
	}
	if stored {
		m.Add(fi.Size())
		e.Size, e.SHA256 = fi.Size(), sum
		return e, "already in store", m, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return e, "", m, fmt.Errorf("rewind: %w", err)
	}

	h := sha256.New()
	r := &meterReader{r: io.TeeReader(limitReader(ctx, f, limit), h), m: m,
		tick: func() { rep.tick(m, schemas.FileUploading) }}
	meta := jetstream.ObjectMeta{Name: e.Object, Metadata: map[string]string{
		MetaMode:   "0" + strconv.FormatUint(uint64(e.Mode), 8),
		MetaSource: src.String() + ":" + file,
	}}
	info, err := obs.Put(ctx, meta, r)
	if err != nil {
		return e, "", m, fmt.Errorf("put object %s: %w", e.Object, err)
	}
	sumBytes := h.Sum(nil)
	if err := sameDigest(info.Digest, sumBytes); err != nil {
		return e, "", m, fmt.Errorf("object %s: %w", e.Object, err)
	}
	e.Size, e.SHA256 = int64(info.Size), hex.EncodeToString(sumBytes)
	return e, "", m, nil
}

// openAs opens a source file for reading as the account.
func openAs(as *osaccount.Worker, file string) (f *os.File, err error) {
	err = as.Do(func() error {
		f, err = os.Open(file)
		return err
	})
	if err != nil && as.Name() != "" {
		err = fmt.Errorf("read as %s: %w", as.Name(), err)
	}
	return f, err
}

// alreadyStored reports whether object holds exactly the content of f
// (same size and SHA-256), with f's hex digest when it does. It reads f
// only when an object of the right size exists.
func alreadyStored(ctx context.Context, obs Objects, object string, f *os.File, size int64) (bool, string, error) {
	info, err := obs.GetInfo(ctx, object)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return false, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("object info %s: %w", object, err)
	}
	if int64(info.Size) != size || info.Digest == "" {
		return false, "", nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return false, "", fmt.Errorf("hash: %w", err)
	}
	if sameDigest(info.Digest, h.Sum(nil)) != nil {
		return false, "", nil
	}
	return true, hex.EncodeToString(h.Sum(nil)), nil
}

// sameDigest compares an object store digest ("SHA-256=<base64url>") with
// a raw SHA-256 sum; an empty digest compares equal (nothing to check).
func sameDigest(digest string, sum []byte) error {
	if digest == "" {
		return nil
	}
	want, err := jetstream.DecodeObjectDigest(digest)
	if err != nil {
		return fmt.Errorf("object digest %q: %w", digest, err)
	}
	if !bytes.Equal(sum, want) {
		return fmt.Errorf("store digest %x, content %x: %w", want, sum, ErrChecksum)
	}
	return nil
}

// digestHex returns the hex form of an object store digest.
func digestHex(digest string) (string, error) {
	raw, err := jetstream.DecodeObjectDigest(digest)
	if err != nil {
		return "", fmt.Errorf("object digest %q: %w", digest, err)
	}
	return hex.EncodeToString(raw), nil
}

// ArtifactEntry describes an object already in the store (a file source
// that names an artifact) as an entry Download takes: its base name, size,
// digest and, when Upload stored one, mode (otherwise 0644).
func ArtifactEntry(ctx context.Context, obs Objects, object string) (schemas.FileEntry, error) {
	info, err := obs.GetInfo(ctx, object)
	if err != nil {
		return schemas.FileEntry{}, fmt.Errorf("artifact %s: %w", object, err)
	}
	sum, err := digestHex(info.Digest)
	if err != nil {
		return schemas.FileEntry{}, fmt.Errorf("artifact %s: %w", object, err)
	}
	mode, ok := parseMode(info.Metadata[MetaMode])
	if !ok {
		mode = 0o644
	}
	return schemas.FileEntry{SourcePath: object, Object: object, Name: path.Base(object),
		Size: int64(info.Size), SHA256: sum, Mode: mode}, nil
}

// ctxReader stops a long local read when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
