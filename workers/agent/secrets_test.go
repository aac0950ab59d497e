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
	cases := []struct {
		interp, content, want string
	}{
		{"bash", "#!/bin/bash\necho \"$# $LINENO ${FLEETJOB_ARGS_Q-unset}\"; for a in \"$@\"; do printf '[%s]\\n' \"$a\"; done",
			"5 2 unset\n"},
		{"sh", "echo \"$# ${FLEETJOB_ARGS_Q-unset}\"; for a in \"$@\"; do printf '[%s]\\n' \"$a\"; done",
			"5 unset\n"},
		{"python3", "import os, sys\nprint(len(sys.argv) - 1, os.environ.get('FLEETJOB_ARGS_JSON', 'unset'), __name__, sys.argv[0].endswith('.script'))\n" +
			"for a in sys.argv[1:]: print('[' + a + ']')", "5 unset __main__ True\n"},
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
