package filexfer

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/fleetjob/fleetjob/schemas"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	obs := newStore(t)
	src := t.TempDir()
	contents := map[string][]byte{
		"a.txt":  []byte("hello\n"),
		"empty":  nil,
		"run.sh": bytes.Repeat([]byte("echo chunked\n"), 40_000), // ~500 KB: several 128 KB chunks
	}
	modes := map[string]os.FileMode{"a.txt": 0o644, "empty": 0o600, "run.sh": 0o755 | os.ModeSetgid}
	var files []string
	for _, name := range []string{"a.txt", "empty", "run.sh"} {
		files = append(files, writeFile(t, filepath.Join(src, name), contents[name], modes[name]))
	}

	var rec recorder
	entries, err := Upload(t.Context(), obs, "job/1/0/"+srcHost.String(), srcHost, files, 0, rec.add)
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	if err := CheckNames(entries); err != nil {
		t.Fatalf("CheckNames: %v", err)
	}
	if len(entries) != 3 {
		t.Fatalf("got %d entries, want 3", len(entries))
	}
	for _, e := range entries {
		if got, want := e.SHA256, sha(contents[e.Name]); got != want {
			t.Errorf("%s: sha256 %s, want %s", e.Name, got, want)
		}
		if got, want := e.Size, int64(len(contents[e.Name])); got != want {
			t.Errorf("%s: size %d, want %d", e.Name, got, want)
		}
		if got, want := e.Mode, unixMode(modes[e.Name]); got != want {
			t.Errorf("%s: mode %o, want %o", e.Name, got, want)
		}
		if !strings.HasPrefix(e.Object, "job/1/0/0:10.0.0.1/") || e.SourceHost != srcHost {
			t.Errorf("%s: object %q from %v", e.Name, e.Object, e.SourceHost)
		}
	}

	dest := filepath.Join(t.TempDir(), "not", "yet")
	if err := Download(t.Context(), obs, entries, dest, destHost, nil, "", 0, rec.add); err != nil {
		t.Fatalf("Download: %v", err)
	}
	for name, want := range contents {
		p := filepath.Join(dest, name)
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: content differs (%d bytes, want %d)", name, len(got), len(want))
		}
		fi, _ := os.Stat(p)
		if gotMode, wantMode := fi.Mode()&(os.ModePerm|os.ModeSetgid), modes[name]; gotMode != wantMode {
			t.Errorf("%s: mode %v, want %v", name, gotMode, wantMode)
		}
	}
	if got := dirNames(t, dest); len(got) != 3 {
		t.Errorf("destination holds %q, want just the 3 files (no temporaries)", got)
	}

	// Every file ends with a success record on both sides, in BlueKing's shape.
	for mode, want := range map[int]int{schemas.FileModeUpload: 3, schemas.FileModeDownload: 3} {
		finals := rec.final(mode)
		if len(finals) != want {
			t.Fatalf("mode %d: %d files reported, want %d: %+v", mode, len(finals), want, finals)
		}
		for k, l := range finals {
			if l.Status != schemas.FileSuccess || l.Progress != 100 {
				t.Errorf("%s: final record %+v, want status 4 at 100%%", k, l)
			}
			if !strings.HasPrefix(l.Content, "[") || !strings.Contains(l.Content, "success") {
				t.Errorf("%s: content %q", k, l.Content)
			}
			if mode == schemas.FileModeDownload && (l.DestHost != destHost || filepath.Dir(l.DestPath) != dest) {
				t.Errorf("%s: download record %+v", k, l)
			}
		}
	}
	first := rec.all()[0]
	if first.Status != schemas.FileUploading || first.Mode != schemas.FileModeUpload || first.SourcePath != files[0] {
		t.Errorf("first record %+v, want an uploading record of %s", first, files[0])
	}

	// A requested mode overrides the source's.
	mode := uint32(0o640)
	dest2 := t.TempDir()
	if err := Download(t.Context(), obs, entries, dest2, destHost, &mode, "", 0, nil); err != nil {
		t.Fatalf("Download with mode: %v", err)
	}
	for name := range contents {
		if fi, _ := os.Stat(filepath.Join(dest2, name)); fi.Mode() != 0o640 {
			t.Errorf("%s: mode %v, want 0640", name, fi.Mode())
		}
	}

	// An artifact entry is downloadable the same way.
	ae, err := ArtifactEntry(t.Context(), obs, entries[2].Object)
	if err != nil {
		t.Fatalf("ArtifactEntry: %v", err)
	}
	if ae.Name != "run.sh" || ae.SHA256 != entries[2].SHA256 || ae.Size != entries[2].Size || ae.Mode != entries[2].Mode {
		t.Errorf("ArtifactEntry = %+v, want it to match %+v", ae, entries[2])
	}
}

func TestUploadIsIdempotent(t *testing.T) {
	t.Parallel()
	obs := newStore(t)
	f := writeFile(t, filepath.Join(t.TempDir(), "pkg.tar"), bytes.Repeat([]byte("x"), 300_000), 0o644)

	first, err := Upload(t.Context(), obs, "job/2", srcHost, []string{f}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	before, err := obs.GetInfo(t.Context(), first[0].Object)
	if err != nil {
		t.Fatal(err)
	}
	var rec recorder
	second, err := Upload(t.Context(), obs, "job/2", srcHost, []string{f}, 0, rec.add)
	if err != nil {
		t.Fatal(err)
	}
	after, err := obs.GetInfo(t.Context(), first[0].Object)
	if err != nil {
		t.Fatal(err)
	}
	if after.NUID != before.NUID || !after.ModTime.Equal(before.ModTime) {
		t.Errorf("second upload rewrote the object: nuid %s -> %s, mtime %v -> %v", before.NUID, after.NUID, before.ModTime, after.ModTime)
	}
	if second[0] != first[0] {
		t.Errorf("second entry %+v, want %+v", second[0], first[0])
	}
	last := rec.all()[len(rec.all())-1]
	if last.Status != schemas.FileSuccess || !strings.Contains(last.Content, "already in store") {
		t.Errorf("last record %+v, want a success saying already in store", last)
	}

	// Same size, other content: uploaded again.
	writeFile(t, f, bytes.Repeat([]byte("y"), 300_000), 0o644)
	third, err := Upload(t.Context(), obs, "job/2", srcHost, []string{f}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	changed, _ := obs.GetInfo(t.Context(), first[0].Object)
	if changed.NUID == before.NUID || third[0].SHA256 == first[0].SHA256 {
		t.Errorf("changed file not uploaded again: nuid %s, sha %s", changed.NUID, third[0].SHA256)
	}
}

func TestUploadFailures(t *testing.T) {
	t.Parallel()
	obs := newStore(t)
	dir := t.TempDir()
	good := writeFile(t, filepath.Join(dir, "good"), []byte("ok"), 0o644)
	var rec recorder
	entries, err := Upload(t.Context(), obs, "job/3", srcHost, []string{filepath.Join(dir, "gone"), dir, good}, 0, rec.add)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Upload error = %v, want one wrapping ErrNotExist", err)
	}
	if len(entries) != 1 || entries[0].SourcePath != good {
		t.Errorf("entries %+v, want just %s", entries, good)
	}
	finals := rec.final(schemas.FileModeUpload)
	for path, want := range map[string]int{filepath.Join(dir, "gone"): schemas.FileFailed, dir: schemas.FileFailed, good: schemas.FileSuccess} {
		if got := finals[path+"|"]; got.Status != want || !strings.HasPrefix(got.Content, "[") {
			t.Errorf("%s: final record %+v, want status %d", path, got, want)
		}
	}
}

func TestDownloadRejectsTampering(t *testing.T) {
	t.Parallel()
	obs := newStore(t)
	f := writeFile(t, filepath.Join(t.TempDir(), "app.bin"), bytes.Repeat([]byte("genuine"), 50_000), 0o644)
	entries, err := Upload(t.Context(), obs, "job/4", srcHost, []string{f}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	good := entries[0]

	wrongSum := good
	wrongSum.SHA256 = sha([]byte("something else"))
	wrongSize := good
	wrongSize.Size++
	for name, e := range map[string]schemas.FileEntry{"entry digest": wrongSum, "entry size": wrongSize} {
		dest := t.TempDir()
		var rec recorder
		err := Download(t.Context(), obs, []schemas.FileEntry{e}, dest, destHost, nil, "", 0, rec.add)
		if !errors.Is(err, ErrChecksum) {
			t.Errorf("%s: Download error = %v, want ErrChecksum", name, err)
		}
		if got := dirNames(t, dest); len(got) != 0 {
			t.Errorf("%s: destination holds %q after a failed download", name, got)
		}
		if l := rec.all(); len(l) == 0 || l[len(l)-1].Status != schemas.FileFailed {
			t.Errorf("%s: records %+v, want a final failure", name, l)
		}
	}

	// The object replaced behind the entry's back (same size, other bytes).
	if _, err := obs.PutBytes(t.Context(), good.Object, bytes.Repeat([]byte("forged!"), 50_000)); err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	writeFile(t, filepath.Join(dest, good.Name), []byte("previous version"), 0o644)
	if err := Download(t.Context(), obs, []schemas.FileEntry{good}, dest, destHost, nil, "", 0, nil); !errors.Is(err, ErrChecksum) {
		t.Errorf("replaced object: Download error = %v, want ErrChecksum", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dest, good.Name)); string(got) != "previous version" {
		t.Errorf("existing file became %q; a failed download must leave it alone", got)
	}
	if got := dirNames(t, dest); len(got) != 1 {
		t.Errorf("destination holds %q, want only the previous file", got)
	}
}

func TestOwner(t *testing.T) {
	t.Parallel()
	obs := newStore(t)
	f := writeFile(t, filepath.Join(t.TempDir(), "owned"), []byte("mine"), 0o644)
	entries, err := Upload(t.Context(), obs, "job/7", srcHost, []string{f}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	var rec recorder
	err = Download(t.Context(), obs, entries, dest, destHost, nil, "fleetjob-no-such-user", 0, rec.add)
	if err == nil || !strings.Contains(err.Error(), "fleetjob-no-such-user") {
		t.Errorf("unknown owner: Download error = %v", err)
	}
	if got := dirNames(t, dest); len(got) != 0 {
		t.Errorf("unknown owner: destination holds %q", got)
	}
	if l := rec.all(); len(l) != 1 || l[0].Status != schemas.FileFailed {
		t.Errorf("unknown owner: records %+v, want one failure", l)
	}

	if os.Geteuid() != 0 {
		if err := Download(t.Context(), obs, entries, dest, destHost, nil, "nobody", 0, nil); !errors.Is(err, os.ErrPermission) {
			t.Errorf("chown to nobody as non-root: error = %v, want ErrPermission", err)
		}
		return
	}
	if err := Download(t.Context(), obs, entries, dest, destHost, nil, "nobody", 0, nil); err != nil {
		t.Fatalf("Download as nobody: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dest, "owned"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 {
		t.Errorf("owner uid %d, want nobody (65534)", st.Uid)
	}
}

func TestCheckNames(t *testing.T) {
	a := schemas.FileEntry{SourceHost: srcHost, SourcePath: "/a/app.conf", Name: "app.conf"}
	b := schemas.FileEntry{SourceHost: destHost, SourcePath: "/b/app.conf", Name: "app.conf"}
	c := schemas.FileEntry{SourceHost: srcHost, SourcePath: "/a/other", Name: "other"}
	if err := CheckNames([]schemas.FileEntry{a, c}); err != nil {
		t.Errorf("distinct names: %v", err)
	}
	err := CheckNames([]schemas.FileEntry{a, c, b})
	if !errors.Is(err, ErrNameConflict) || !strings.Contains(err.Error(), "/a/app.conf") || !strings.Contains(err.Error(), "/b/app.conf") {
		t.Errorf("CheckNames = %v, want a conflict naming both sources", err)
	}
	dest := t.TempDir()
	if err := Download(t.Context(), nil, []schemas.FileEntry{a, b}, dest, destHost, nil, "", 0, nil); !errors.Is(err, ErrNameConflict) {
		t.Errorf("Download with a conflict: %v", err)
	}
}

func TestObjectName(t *testing.T) {
	tests := []struct{ prefix, path, want string }{
		{"job/1/0/0:10.0.0.1", "/tmp/a.txt", "job/1/0/0:10.0.0.1/tmp/a.txt"},
		{"job/1", "/srv/a:b", "job/1/srv/a%3Ab"},
		{"/job/1/", "/tmp/a b.txt", "job/1/tmp/a%20b.txt"},
		{"job/1", "/tmp/a%20b.txt", "job/1/tmp/a%2520b.txt"},
		{"", "/opt/日志", "opt/%E6%97%A5%E5%BF%97"},
	}
	for _, tt := range tests {
		if got := ObjectName(tt.prefix, tt.path); got != tt.want {
			t.Errorf("ObjectName(%q, %q) = %q, want %q", tt.prefix, tt.path, got, tt.want)
		}
	}
}

// TestManyTargets fetches one upload to many destinations at once, as many
// target agents do.
func TestManyTargets(t *testing.T) {
	t.Parallel()
	obs := newStore(t)
	data := bytes.Repeat([]byte("shared "), 100_000)
	f := writeFile(t, filepath.Join(t.TempDir(), "shared.bin"), data, 0o644)
	entries, err := Upload(t.Context(), obs, "job/10", srcHost, []string{f}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var g errgroup.Group
	dests := make([]string, 20)
	for i := range dests {
		dests[i] = t.TempDir()
		g.Go(func() error {
			host := schemas.Host{IP: fmt.Sprintf("10.1.0.%d", i+1)}
			return Download(t.Context(), obs, entries, dests[i], host, nil, "", 0, nil)
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	for _, d := range dests {
		if got, err := os.ReadFile(filepath.Join(d, "shared.bin")); err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: %d bytes, %v", d, len(got), err)
		}
	}
}
