package octans

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/fleetjob/fleetjob/api"
)

// Turning octans "tasks", "params" and "fork_num" into a job's script,
// environment and concurrency.

// octansTask is one Ansible-style task object.
type octansTask struct {
	Name         string            `json:"name"`
	Shell        *string           `json:"shell"`
	Command      *string           `json:"command"`
	Raw          *string           `json:"raw"`
	Script       *string           `json:"script"`
	Args         *octansTaskArgs   `json:"args"`
	Environment  map[string]string `json:"environment"`
	IgnoreErrors bool              `json:"ignore_errors"`
}

type octansTaskArgs struct {
	Chdir string `json:"chdir"`
}

// octansScript turns "tasks" (a shell script, or a list of Ansible-style
// task objects run in order, stopping at the first failure) into one bash
// script.
func octansScript(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", errors.New("required: a shell script or a list of task objects")
	}
	if raw[0] == '"' {
		var sh string
		if err := json.Unmarshal(raw, &sh); err != nil {
			return "", err
		}
		if strings.TrimSpace(sh) == "" {
			return "", errors.New("empty script")
		}
		return sh, nil
	}
	if raw[0] == '{' {
		raw = append(append([]byte{'['}, raw...), ']')
	}
	var tasks []octansTask
	if err := api.DecodeStrictBytes(raw, &tasks); err != nil {
		return "", fmt.Errorf("want a script string or task objects (name, one of shell, command, raw or script, args.chdir, environment, ignore_errors): %s", api.Message(err))
	}
	if len(tasks) == 0 {
		return "", errors.New("empty task list")
	}
	var b strings.Builder
	for i, t := range tasks {
		body, err := t.body()
		if err != nil {
			return "", fmt.Errorf("task %d: %v", i, err)
		}
		label := t.Name
		if label == "" {
			label = fmt.Sprintf("task %d", i+1)
		}
		fmt.Fprintf(&b, "echo %s\n", shellQuote("TASK ["+label+"] ****"))
		sum := sha256.Sum256([]byte(body))
		delim := fmt.Sprintf("__FLEETJOB_TASK_%d_%x__", i, sum[:4])
		b.WriteString("(\n")
		if t.Args != nil && t.Args.Chdir != "" {
			fmt.Fprintf(&b, "cd %s || exit $?\n", shellQuote(t.Args.Chdir))
		}
		keys := make([]string, 0, len(t.Environment))
		for k := range t.Environment {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if !validEnvName(k) {
				return "", fmt.Errorf("task %d: %q is not a valid environment variable name", i, k)
			}
			fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(t.Environment[k]))
		}
		fmt.Fprintf(&b, "bash -c \"$(cat <<'%s'\n%s\n%s\n)\"\n)\n", delim, body, delim)
		if t.IgnoreErrors {
			b.WriteString("rc=$?; [ $rc -ne 0 ] && echo \"...ignoring (rc=$rc)\"\n")
		} else {
			fmt.Fprintf(&b, "rc=$?; if [ $rc -ne 0 ]; then echo %s\"$rc\"; exit $rc; fi\n", shellQuote("FAILED: "+label+" rc="))
		}
	}
	return b.String(), nil
}

func (t octansTask) body() (string, error) {
	var set []string
	var body string
	for k, v := range map[string]*string{"shell": t.Shell, "command": t.Command, "raw": t.Raw, "script": t.Script} {
		if v != nil {
			set, body = append(set, k), *v
		}
	}
	if len(set) != 1 {
		return "", fmt.Errorf("needs exactly one of shell, command, raw, script (got %d)", len(set))
	}
	if strings.TrimSpace(body) == "" {
		return "", fmt.Errorf("empty %s", set[0])
	}
	// shell, command and raw run their text with bash; script names a
	// script file on the host, with its arguments, run the same way.
	return body, nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func validEnvName(k string) bool {
	if k == "" {
		return false
	}
	for i, r := range k {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// octansParams reads "params": an object (or a string holding one) whose
// entries become environment variables.
func octansParams(raw json.RawMessage) (map[string]string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		if strings.TrimSpace(s) == "" {
			return nil, nil
		}
		raw = []byte(s)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, errors.New("want an object of parameters")
	}
	env := make(map[string]string, len(m))
	for k, v := range m {
		if !validEnvName(k) {
			return nil, fmt.Errorf("%q is not a valid environment variable name", k)
		}
		switch v := v.(type) {
		case string:
			env[k] = v
		case nil:
			env[k] = ""
		default:
			b, _ := json.Marshal(v)
			env[k] = string(b)
		}
	}
	return env, nil
}

// octansForkNum reads fork_num, a number or a numeric string; 0 or absent
// means all nodes at once.
func octansForkNum(raw json.RawMessage) (int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var n int
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return 0, fmt.Errorf("%q is not a number", s)
		}
		n = v
	} else if err := json.Unmarshal(raw, &n); err != nil {
		return 0, errors.New("want a whole number")
	}
	if n < 0 {
		return 0, errors.New("must not be negative")
	}
	return n, nil
}
