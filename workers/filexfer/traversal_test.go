package filexfer

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fleetjob/fleetjob/schemas"
)

func TestDownloadStaysInDestination(t *testing.T) {
	t.Parallel()
	obs := newStore(t)
	payload := []byte("payload that must stay inside dest\n")
	f := writeFile(t, filepath.Join(t.TempDir(), "payload"), payload, 0o644)
	entries, err := Upload(t.Context(), obs, "job/8", srcHost, []string{f}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	base := entries[0]

	parent := t.TempDir()
	dest := filepath.Join(parent, "dest")
	outside := filepath.Join(parent, "outside")
	writeFile(t, filepath.Join(outside, "target.txt"), []byte("original"), 0o644)
	writeFile(t, filepath.Join(dest, "real.txt"), []byte("real"), 0o644)
	if err := os.Mkdir(filepath.Join(dest, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"link":     filepath.Join(outside, "target.txt"), // file outside
		"evil":     outside,                              // directory outside
		"relout":   "../outside/target.txt",              // relative escape
		"dangling": filepath.Join(outside, "nope"),       // would create a file outside
		"inside":   "real.txt",                           // a file inside: replaced, not written through
	} {
		if err := os.Symlink(target, filepath.Join(dest, link)); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		name string
		want error
	}{
		{"../x", ErrBadName},
		{"/etc/x", ErrBadName},
		{"a/b", ErrBadName},
		{"..", ErrBadName},
		{".", ErrBadName},
		{"", ErrBadName},
		{"a\x00b", ErrBadName},
		{"link", ErrUnsafeTarget},
		{"evil", ErrUnsafeTarget},
		{"relout", ErrUnsafeTarget},
		{"dangling", ErrUnsafeTarget},
		{"subdir", ErrUnsafeTarget},
	}
	for _, tt := range tests {
		e := base
		e.Name = tt.name
		var rec recorder
		err := Download(t.Context(), obs, []schemas.FileEntry{e}, dest, destHost, nil, "", 0, rec.add)
		if !errors.Is(err, tt.want) {
			t.Errorf("name %q: Download error = %v, want %v", tt.name, err, tt.want)
		}
		if l := rec.all(); len(l) != 1 || l[0].Status != schemas.FileFailed || l[0].Mode != schemas.FileModeDownload {
			t.Errorf("name %q: records %+v, want one failure", tt.name, l)
		}
	}

	// Several names in one call: the bad ones fail, the good one lands.
	bad, good := base, base
	bad.Name, good.Name = "../escaped", "fine.txt"
	if err := Download(t.Context(), obs, []schemas.FileEntry{bad, good}, dest, destHost, nil, "", 0, nil); !errors.Is(err, ErrBadName) {
		t.Errorf("mixed batch: error = %v, want ErrBadName", err)
	}

	// A symlink to a file inside dest is replaced by the file; its target is untouched.
	in := base
	in.Name = "inside"
	if err := Download(t.Context(), obs, []schemas.FileEntry{in}, dest, destHost, nil, "", 0, nil); err != nil {
		t.Fatalf("inside symlink: %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(dest, "inside")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("dest/inside: %v, %v; want a regular file", fi, err)
	}

	for p, want := range map[string]string{
		filepath.Join(outside, "target.txt"): "original",
		filepath.Join(dest, "real.txt"):      "real",
		filepath.Join(dest, "fine.txt"):      string(payload),
		filepath.Join(dest, "inside"):        string(payload),
	} {
		if got, err := os.ReadFile(p); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", p, got, err, want)
		}
	}
	if got := dirNames(t, outside); !slices.Equal(got, []string{"target.txt"}) {
		t.Errorf("outside holds %q, want only target.txt", got)
	}
	if got, want := dirNames(t, parent), []string{"dest", "outside"}; !slices.Equal(got, want) {
		t.Errorf("parent holds %q, want %q", got, want)
	}
	if _, err := os.Stat(filepath.Join(parent, "escaped")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("../escaped was written: %v", err)
	}
	wantDest := []string{"dangling", "evil", "fine.txt", "inside", "link", "real.txt", "relout", "subdir"}
	if got := dirNames(t, dest); !slices.Equal(got, wantDest) {
		t.Errorf("dest holds %q, want %q (no temporaries, nothing else)", got, wantDest)
	}
	if got := dirNames(t, filepath.Join(dest, "subdir")); len(got) != 0 {
		t.Errorf("dest/subdir holds %q", got)
	}
	for _, l := range []string{"link", "evil", "relout", "dangling"} {
		if fi, err := os.Lstat(filepath.Join(dest, l)); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			t.Errorf("dest/%s is no longer a symlink: %v %v", l, fi, err)
		}
	}

	if err := Download(t.Context(), obs, entries, "relative/dest", destHost, nil, "", 0, nil); err == nil {
		t.Error("relative destination accepted")
	}
}
