package agent

import (
	"os"
	"path/filepath"
	"testing"
)

// A script file is written without a mkdir per task, and its directory is
// made again when someone removed it while the agent ran.
func TestWriteScriptRecreatesItsDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "scripts")
	file := filepath.Join(dir, "e1.script")
	if err := writeScript(dir, file, "echo hi\n"); err != nil {
		t.Fatalf("first write (no dir yet): %v", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := writeScript(dir, file, "echo again\n"); err != nil {
		t.Fatalf("write after the dir was removed: %v", err)
	}
	b, err := os.ReadFile(file)
	if err != nil || string(b) != "echo again\n" {
		t.Fatalf("script file holds %q, %v", b, err)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm()&0o100 == 0 {
		t.Fatalf("script file mode %v: not executable", fi.Mode())
	}
}

// The interpreter is looked up once and then served from the cache; an
// unknown one is an error and is not cached.
func TestLookInterpreterCaches(t *testing.T) {
	p, err := lookInterpreter("bash")
	if err != nil {
		t.Skip("no bash on this machine")
	}
	if c, ok := interpreters.Load("bash"); !ok || c.(string) != p {
		t.Fatalf("bash not cached: %v %v", c, ok)
	}
	if _, err := lookInterpreter("no-such-interpreter-xyz"); err == nil {
		t.Fatal("an interpreter that does not exist was found")
	}
	if _, ok := interpreters.Load("no-such-interpreter-xyz"); ok {
		t.Fatal("a failed lookup was cached")
	}
}
