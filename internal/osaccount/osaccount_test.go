package osaccount

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func nobody(t *testing.T) Identity {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("switching accounts needs root")
	}
	id, err := Lookup("nobody")
	if err != nil {
		t.Skipf("no nobody account: %v", err)
	}
	return id
}

// A worker acting as nobody cannot open /etc/shadow, creates files and
// directories that nobody owns, and changes nothing for the rest of the
// process, which still reads /etc/shadow as root.
func TestWorkerActsAsTheUser(t *testing.T) {
	id := nobody(t)
	w, err := id.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	err = w.Do(func() error {
		f, err := os.Open("/etc/shadow")
		if err == nil {
			f.Close()
		}
		return err
	})
	if !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("open /etc/shadow as nobody: %v, want permission denied", err)
	}
	if _, err := os.ReadFile("/etc/shadow"); err != nil {
		t.Fatalf("the agent itself lost access: %v", err)
	}
	dir := openDir(t)
	sub := filepath.Join(dir, "a", "b")
	if err := w.Do(func() error {
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(sub, "f"), []byte("x"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "a"), sub, filepath.Join(sub, "f")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != id.Cred.Uid || st.Gid != id.Cred.Gid {
			t.Errorf("%s is %d:%d, want nobody's %d:%d", p, st.Uid, st.Gid, id.Cred.Uid, id.Cred.Gid)
		}
	}
	// a directory only root may write into stays closed to the worker
	closed := t.TempDir()
	if err := w.Do(func() error { return os.WriteFile(filepath.Join(closed, "x"), nil, 0o644) }); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("write into a 0700 root directory as nobody: %v", err)
	}
}

// A script run as an identity has its uid, gid and exactly the groups id -G
// lists for the user.
func TestApplyRunsWithTheUsersGroups(t *testing.T) {
	id := nobody(t)
	cmd := exec.Command("id", "-G")
	id.Apply(cmd)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	want, err := exec.Command("id", "-G", "nobody").Output()
	if err != nil {
		t.Fatal(err)
	}
	got, exp := strings.Fields(string(out)), strings.Fields(string(want))
	slices.Sort(got)
	slices.Sort(exp)
	if !slices.Equal(got, exp) {
		t.Fatalf("groups %v, want %v", got, exp)
	}
}

// openDir is a fresh directory anyone may write into (t.TempDir's parent
// is closed to other users).
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "osaccount-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}
