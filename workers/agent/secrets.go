package agent

// This file holds what the agent does with sensitive values: it opens
// them (sealed to its curve key by the API) just before a script runs,
// and hands them to the script without putting them on its command line
// (readable by every user in /proc/<pid>/cmdline) or in its script file.

import (
	"encoding/json"
	"sort"
	"strings"

	"github.com/fleetjob/fleetjob/schemas"
)

// Environment variables that carry a script's sensitive args; the script's
// prelude removes them before the script's own first line runs.
const (
	envArgsShell  = "FLEETJOB_ARGS_Q"    // shell-quoted words, for eval "set -- …"
	envArgsPython = "FLEETJOB_ARGS_JSON" // a JSON array of strings
)

// shellPrelude goes on the first line of a shell script with sensitive
// args, before the script's own first line (so line numbers hold): it sets
// the positional parameters from the environment and unsets the variable,
// so the script's children never see it.
const shellPrelude = `eval "set -- $` + envArgsShell + `"; unset ` + envArgsShell + `; `

// pythonPrelude runs a python script with sensitive args as `python3
// file args…` would, its sys.argv read from the environment (and removed
// from it).
const pythonPrelude = `import json, os, runpy, sys; sys.argv = sys.argv[1:2] + json.loads(os.environ.pop("` + envArgsPython + `")); ` +
	`sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0])); runpy.run_path(sys.argv[0], run_name="__main__")`

// openTask returns the task with its script's sealed values opened with
// the agent's curve key; a task without them is returned as it is. The
// journal keeps the task as it came (sealed): the clear values are only
// ever in this process's memory and in the script's environment.
func (a *Agent) openTask(t *schemas.Task) (*schemas.Task, error) {
	if t.Script == nil || t.Script.Sealed == nil {
		return t, nil
	}
	sc, err := t.Script.Open(a.curve)
	if err != nil {
		return nil, err
	}
	c := *t
	c.Script = sc
	return &c, nil
}

// invocation is how a script is started: the content of its file, the
// interpreter's arguments and the variables added to its environment.
// Sensitive args travel in the environment (readable only by the
// script's own user and root) and a prelude turns them back into the
// script's arguments; other args are on the command line as usual.
func invocation(interp, file string, sc *schemas.Script) (content string, argv, env []string) {
	content, argv = sc.Content, append([]string{file}, sc.Args...)
	env = make([]string, 0, len(sc.Env)+1)
	keys := make([]string, 0, len(sc.Env))
	for k := range sc.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+sc.Env[k])
	}
	if !sc.Sensitive || len(sc.Args) == 0 {
		return content, argv, env
	}
	switch interp {
	case "python3":
		b, _ := json.Marshal(sc.Args)
		return content, []string{"-c", pythonPrelude, file}, append(env, envArgsPython+"="+string(b))
	default: // bash, sh: schemas.HidesArgs
		q := make([]string, len(sc.Args))
		for i, v := range sc.Args {
			q[i] = shellQuote(v)
		}
		return shellPrelude + content, []string{file}, append(env, envArgsShell+"="+strings.Join(q, " "))
	}
}

// shellQuote quotes s as one POSIX shell word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
