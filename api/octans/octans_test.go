package octans

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/fleetjob/fleetjob/schemas"
)

// runBash runs a composed octans script and returns its output and exit code.
func runBash(t *testing.T, script string) (string, int) {
	t.Helper()
	out, err := exec.Command("bash", "-c", script).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func TestOctansScriptTaskList(t *testing.T) {
	raw := json.RawMessage(`[
		{"name": "one", "shell": "echo 'it''s' one; echo $X"},
		{"command": "false", "ignore_errors": true},
		{"raw": "cd /; pwd", "args": {"chdir": "/tmp"}},
		{"name": "boom", "shell": "exit 7"},
		{"shell": "echo never"}
	]`)
	s, err := octansScript(raw)
	if err != nil {
		t.Fatal(err)
	}
	out, code := runBash(t, "X=env "+s)
	if code != 7 {
		t.Errorf("exit %d, want 7 from the failing task", code)
	}
	for _, want := range []string{"TASK [one] ****", "its one", "...ignoring (rc=1)", "TASK [task 3] ****", "/\n", "FAILED: boom rc=7"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "never") {
		t.Errorf("a task after the failure ran:\n%s", out)
	}
}

func TestOctansScriptForms(t *testing.T) {
	if s, err := octansScript(json.RawMessage(`"uptime"`)); err != nil || s != "uptime" {
		t.Errorf("string: %q %v", s, err)
	}
	if _, err := octansScript(json.RawMessage(`{"shell": "true"}`)); err != nil {
		t.Errorf("single object: %v", err)
	}
	for _, bad := range []string{``, `null`, `""`, `[]`, `[{"copy": "x"}]`, `[{"shell": "a", "raw": "b"}]`, `[{"name": "n"}]`, `7`, `[{"shell": "x", "environment": {"1A": "x"}}]`} {
		_, err := octansScript(json.RawMessage(bad))
		if err == nil {
			t.Errorf("%s accepted", bad)
			continue
		}
		for _, internal := range []string{"json:", "Go value", "octans.", "schemas.", "[]"} {
			if strings.Contains(err.Error(), internal) {
				t.Errorf("%s: %q names Go internals (%s)", bad, err, internal)
			}
		}
	}
}

func TestOctansParamsAndForks(t *testing.T) {
	env, err := octansParams(json.RawMessage(`"{\"A\": \"x\", \"N\": 3, \"L\": [1]}"`))
	if err != nil || env["A"] != "x" || env["N"] != "3" || env["L"] != "[1]" {
		t.Errorf("params from a string: %v %v", env, err)
	}
	if _, err := octansParams(json.RawMessage(`{"bad-name": 1}`)); err == nil {
		t.Error("bad variable name accepted")
	}
	if _, err := octansParams(json.RawMessage(`[1]`)); err == nil {
		t.Error("array accepted as params")
	}
	for in, want := range map[string]int{``: 0, `5`: 5, `"7"`: 7, `null`: 0} {
		if got, err := octansForkNum(json.RawMessage(in)); err != nil || got != want {
			t.Errorf("fork_num %s: %d %v", in, got, err)
		}
	}
	for _, bad := range []string{`-1`, `"x"`, `1.5`, `{}`} {
		if _, err := octansForkNum(json.RawMessage(bad)); err == nil {
			t.Errorf("fork_num %s accepted", bad)
		}
	}
}

func TestOctansHostStatus(t *testing.T) {
	for st, want := range map[schemas.HostStatus]int{
		schemas.HostPending: octInit, schemas.HostSkipped: octInit, schemas.HostDispatched: octInit,
		schemas.HostRunning: octRunning, schemas.HostSuccess: octSuccess, schemas.HostStopped: octStopped,
		schemas.HostFailed: octFailed, schemas.HostTimeout: octFailed, schemas.HostInterrupted: octFailed,
	} {
		if got := octansHostStatus(st); got != want {
			t.Errorf("%s: got %d, want %d", st, got, want)
		}
	}
}
