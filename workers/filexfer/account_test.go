package filexfer

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fleetjob/fleetjob/internal/osaccount"
	"github.com/fleetjob/fleetjob/schemas"
)

// asNobody is a worker acting as nobody (the test needs root).
func asNobody(t *testing.T) (*osaccount.Worker, osaccount.Identity) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("acting as another account needs root")
	}
	id, err := osaccount.Lookup("nobody")
	if err != nil {
		t.Skipf("no nobody account: %v", err)
	}
	w, err := id.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w, id
}

// openTemp is a fresh directory anyone may write into (t.TempDir's parent
// is closed to other users).
func openTemp(t *testing.T, mode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "filexfer-account-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Reading /etc/shadow as nobody fails for that file, with the account
// and the permission error in its record, and stores nothing.
func TestUploadAsAccountCannotReadWhatTheUserCannot(t *testing.T) {
	as, _ := asNobody(t)
	obs := newStore(t)
	var rec recorder
	entries, err := UploadAs(t.Context(), as, obs, "job/1/0/u0", srcHost, []string{"/etc/shadow"}, 0, rec.add)
	if !errors.Is(err, fs.ErrPermission) || len(entries) != 0 {
		t.Fatalf("upload of /etc/shadow as nobody: %d entries, %v; want permission denied", len(entries), err)
	}
	last := rec.final(schemas.FileModeUpload)["/etc/shadow|"]
	if last.Status != schemas.FileFailed || !strings.Contains(last.Content, "as nobody") || !strings.Contains(last.Content, "permission denied") {
		t.Fatalf("file record %+v: want failed, naming nobody and permission denied", last)
	}
	if _, err := obs.GetInfo(t.Context(), ObjectName("job/1/0/u0", "/etc/shadow")); err == nil {
		t.Fatal("the file was stored")
	}
	// the agent itself still reads it
	if entries, err := Upload(t.Context(), obs, "job/1/0/u1", srcHost, []string{"/etc/shadow"}, 0, nil); err != nil || len(entries) != 1 {
		t.Fatalf("upload as the agent: %v", err)
	}
}

// Files and the directories made for them belong to the destination's
// account; a symlink on the way into a directory the account may not
// write into is not followed there.
func TestDownloadAsAccountOwnsWhatItWrites(t *testing.T) {
	as, id := asNobody(t)
	obs := newStore(t)
	src := writeFile(t, filepath.Join(t.TempDir(), "app.conf"), []byte("port=80\n"), 0o640)
	entries, err := Upload(t.Context(), obs, "job/2/0/u0", srcHost, []string{src}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	open := openTemp(t, 0o777)
	dest := filepath.Join(open, "a", "b")
	if err := DownloadAs(t.Context(), as, obs, entries, dest, destHost, nil, "", 0, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(open, "a"), dest, filepath.Join(dest, "app.conf")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != id.Cred.Uid || st.Gid != id.Cred.Gid {
			t.Errorf("%s is owned by %d:%d, want nobody's %d:%d", p, st.Uid, st.Gid, id.Cred.Uid, id.Cred.Gid)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dest, "app.conf")); err != nil || string(b) != "port=80\n" {
		t.Fatalf("content %q, %v", b, err)
	}

	// Someone plants open/link → a root-only directory: nobody's files do
	// not land there, as root's would.
	closed := openTemp(t, 0o755)
	if err := os.Symlink(closed, filepath.Join(open, "link")); err != nil {
		t.Fatal(err)
	}
	var rec recorder
	err = DownloadAs(t.Context(), as, obs, entries, filepath.Join(open, "link", "sub"), destHost, nil, "", 0, rec.add)
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "create destination as nobody") {
		t.Fatalf("download through a planted symlink as nobody: %v, want permission denied creating it as nobody", err)
	}
	if names := dirNames(t, closed); len(names) != 0 {
		t.Fatalf("the root-only directory got %v", names)
	}
	for _, l := range rec.final(schemas.FileModeDownload) {
		if l.Status != schemas.FileFailed {
			t.Fatalf("file record %+v: want failed", l)
		}
	}
}
