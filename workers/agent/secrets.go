package agent

// This file holds what the agent does with sensitive values: it opens
// them (sealed to its curve key by the API) just before a script runs,
// and hands them to the script without putting them on its command line
// (readable by every user in /proc/<pid>/cmdline) or in its script file.

import (
	"sort"
	"strconv"
	"strings"

	"github.com/fleetjob/fleetjob/schemas"
)

// Sensitive args travel in environment variables, one each
// (FLEETJOB_ARG_<i>, so each may be as long as an argument could, and no
// quoting is needed), with variables that say how to collect them; the
// script's prelude takes them out of its environment before the script's
// own first line runs, so its children never see them.
const (
	envArg      = "FLEETJOB_ARG_"      // + index: one argument
	envArgsRefs = "FLEETJOB_ARGS_Q"    // shell: "$FLEETJOB_ARG_0" "$FLEETJOB_ARG_1" …, for eval "set -- …"
	envArgsVars = "FLEETJOB_ARGS_VARS" // shell: the names to unset
	envArgsN    = "FLEETJOB_ARGS_N"    // python: how many there are
)

// shellPrelude goes on the first line of a shell script with sensitive
// args, before the script's own first line (so line numbers hold): it sets
// the positional parameters and unsets the variables that carried them.
const shellPrelude = `eval "set -- $` + envArgsRefs + `"; unset $` + envArgsVars + ` ` + envArgsVars + ` ` + envArgsRefs + `; `

// pythonPrelude runs a python script with sensitive args as `python3
// file args…` would, its sys.argv taken out of the environment.
const pythonPrelude = `import os, runpy, sys; sys.argv = sys.argv[1:2] + [os.environ.pop("` + envArg + `%d" % i) for i in range(int(os.environ.pop("` + envArgsN + `")))]; ` +
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
	env = make([]string, 0, len(sc.Env)+len(sc.Args)+2)
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
	names := make([]string, len(sc.Args))
	for i, v := range sc.Args {
		names[i] = envArg + strconv.Itoa(i)
		env = append(env, names[i]+"="+v)
	}
	if interp == "python3" {
		return content, []string{"-c", pythonPrelude, file}, append(env, envArgsN+"="+strconv.Itoa(len(names)))
	}
	// bash, sh: schemas.HidesArgs
	refs := make([]string, len(names))
	for i, n := range names {
		refs[i] = `"$` + n + `"`
	}
	return shellPrelude + content, []string{file},
		append(env, envArgsRefs+"="+strings.Join(refs, " "), envArgsVars+"="+strings.Join(names, " "))
}
