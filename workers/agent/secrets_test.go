package agent

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetjob/fleetjob/schemas"
)

// TestInvocationHidesSensitiveArgs runs real bash, sh and python3 scripts
// with sensitive args: each gets exactly its args, none of them is on the
// command line or in the script file, the variable that carried them is
// gone before the script's first line, and line numbers are the script's.
func TestInvocationHidesSensitiveArgs(t *testing.T) {
	args := []string{"plain", "two words", `it's "quoted" $HOME ` + "`x`", "new\nline", ""}
	// each prints its arg count, its line, what is left of the variables
	// that carried the args, then each arg in brackets
	cases := []struct {
		interp, content, want string
	}{
		{"bash", "#!/bin/bash\necho \"$# $LINENO [$(env | grep -c ^FLEETJOB_ARG)]\"; for a in \"$@\"; do printf '[%s]\\n' \"$a\"; done",
			"5 2 [0]\n"},
		{"sh", "echo \"$# [$(env | grep -c ^FLEETJOB_ARG)]\"; for a in \"$@\"; do printf '[%s]\\n' \"$a\"; done",
			"5 [0]\n"},
		{"python3", "import os, sys\nprint(len(sys.argv) - 1, [k for k in os.environ if k.startswith('FLEETJOB_ARG')], __name__, sys.argv[0].endswith('.script'))\n" +
			"for a in sys.argv[1:]: print('[' + a + ']')", "5 [] __main__ True\n"},
	}
	for _, c := range cases {
		t.Run(c.interp, func(t *testing.T) {
			path, err := exec.LookPath(c.interp)
			if err != nil {
				t.Skipf("%s not installed", c.interp)
			}
			file := filepath.Join(t.TempDir(), "x.script")
			sc := &schemas.Script{Content: c.content, Args: args, Sensitive: true, Env: map[string]string{"TOKEN": "env-secret"}}
			content, argv, env := invocation(c.interp, file, sc)
			if err := os.WriteFile(file, []byte(content), 0o700); err != nil {
				t.Fatal(err)
			}
			for _, a := range args[:4] {
				if strings.Contains(content, a) || strings.Contains(strings.Join(argv, " "), a) {
					t.Errorf("%q in the script file or on the command line: %q %q", a, content, argv)
				}
			}
			cmd := exec.Command(path, argv...)
			cmd.Env = append(baseEnv(), env...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			want := c.want
			for _, a := range args {
				want += "[" + a + "]\n"
			}
			if string(out) != want {
				t.Errorf("got %q, want %q", out, want)
			}
		})
	}
}

// TestInvocationPlainArgs keeps non-sensitive args on the command line.
func TestInvocationPlainArgs(t *testing.T) {
	sc := &schemas.Script{Content: "echo", Args: []string{"a", "b"}, Env: map[string]string{"B": "2", "A": "1"}}
	content, argv, env := invocation("bash", "/f", sc)
	if content != "echo" || strings.Join(argv, " ") != "/f a b" || strings.Join(env, " ") != "A=1 B=2" {
		t.Errorf("got %q %q %q", content, argv, env)
	}
}

// TestInvocationLongSensitiveArgs: sensitive args together far longer
// than one environment string may be (128 KiB) still reach the script.
func TestInvocationLongSensitiveArgs(t *testing.T) {
	long := strings.Repeat("x", 100<<10)
	for _, interp := range []string{"bash", "python3"} {
		path, err := exec.LookPath(interp)
		if err != nil {
			t.Skipf("%s not installed", interp)
		}
		content := `echo "${#1} ${#2} ${#3}"`
		if interp == "python3" {
			content = `import sys; print(*[len(a) for a in sys.argv[1:]])`
		}
		file := filepath.Join(t.TempDir(), "x.script")
		content, argv, env := invocation(interp, file, &schemas.Script{Content: content, Args: []string{long, long, long}, Sensitive: true})
		if err := os.WriteFile(file, []byte(content), 0o700); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(path, argv...)
		cmd.Env = append(baseEnv(), env...)
		out, err := cmd.CombinedOutput()
		if want := "102400 102400 102400\n"; err != nil || string(out) != want {
			t.Errorf("%s: %v %q, want %q", interp, err, out, want)
		}
	}
}
