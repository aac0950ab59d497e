package agent

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// A script reaches its interpreter on descriptor 3, sealed: an account
// other than the agent's reads it there (nothing on disk is needed), and
// nobody can change it once the agent has written it.
func TestScriptFDRunsAsAnotherUser(t *testing.T) {
	for interp, content := range map[string]string{
		"bash": "id -u\n", "sh": "id -u\n", "python3": "import os\nprint(os.getuid())\n",
	} {
		path, err := exec.LookPath("/usr/bin/" + interp) // open to every account, unlike ~/.pyenv
		if err != nil {
			continue
		}
		f, err := scriptFD("1.0.0.1", content)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString("rm -rf /\n"); err == nil {
			t.Fatal("a sealed script could be written")
		}
		cmd := exec.Command(path, scriptPath)
		cmd.ExtraFiles = []*os.File{f}
		want := strconv.Itoa(os.Geteuid())
		if os.Geteuid() == 0 {
			if err := runAs(cmd, "nobody"); err != nil {
				t.Skipf("no nobody account: %v", err)
			}
			want = "65534"
		}
		out, err := cmd.CombinedOutput()
		f.Close()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("%s: script printed %q (%v), want uid %s", interp, out, err, want)
		}
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
