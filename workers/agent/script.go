package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fleetjob/fleetjob/schemas"
)

// Reasons an execution is killed.
const (
	killTimeout  = "timeout"
	killStop     = "stopped"
	killShutdown = "shutdown"
)

// killGrace is how long a killed process group gets between SIGTERM and SIGKILL.
const killGrace = 2 * time.Second

// execution is one running task.
type execution struct {
	task  *schemas.Task
	start time.Time // when it started: journaled, and given by its reports

	mu     sync.Mutex
	pgid   int
	cancel context.CancelFunc // ends a file transfer; scripts are signalled instead
	reason string             // why it was killed, if it was
	msgAck func()             // in-progress ack of the current delivery
	done   chan struct{}
}

// kill signals the process group: SIGTERM, then SIGKILL after a grace.
// The first reason given wins.
func (e *execution) kill(reason string) bool {
	e.mu.Lock()
	if e.reason == "" {
		e.reason = reason
	}
	pgid, cancel := e.pgid, e.cancel
	e.mu.Unlock()
	if cancel != nil {
		cancel()
		return true
	}
	if pgid <= 0 {
		return pgid == 0 // not started yet: it will see the reason and not run
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	go func() {
		select {
		case <-e.done:
		case <-time.After(killGrace):
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}()
	return true
}

type outcome struct {
	status   schemas.HostStatus
	exitCode *int
	err      string
	files    []schemas.FileEntry // what an upload stored
}

func failed(format string, args ...any) outcome {
	return outcome{status: schemas.HostFailed, err: fmt.Sprintf(format, args...)}
}

// runScript runs a script task in its own process group with the timeout
// enforced, streaming stdout and stderr (merged, in order) line by line.
func (a *Agent) runScript(e *execution, logs *logStream) outcome {
	t := e.task
	sc := t.Script
	if sc == nil {
		return failed("script task without a script")
	}
	interp, ok := schemas.Interpreters[sc.Interpreter]
	if !ok {
		return failed("unknown interpreter %q", sc.Interpreter)
	}
	path, err := lookInterpreter(interp)
	if err != nil {
		return failed("interpreter %s not found on the host", interp)
	}
	// The script reaches the interpreter on an inherited descriptor (see
	// scriptFD): no file on disk, readable by whatever account it runs as.
	// Sensitive args travel in its environment, not on its command line.
	content, argv, env := invocation(interp, scriptPath, sc)
	script, err := scriptFD(t.ExecID, content)
	if err != nil {
		return failed("script: %v", err)
	}
	defer script.Close()

	cmd := exec.Command(path, argv...)
	cmd.Dir = filepath.Join(a.cfg.DataDir, "scripts")
	cmd.ExtraFiles = []*os.File{script} // fd 3 = scriptPath
	cmd.Env = append(baseEnv(),
		"FLEETJOB_JOB_ID="+strconv.FormatInt(t.JobID, 10),
		"FLEETJOB_EXEC_ID="+t.ExecID,
		"FLEETJOB_HOST_IP="+t.Target.IP,
		"FLEETJOB_CLOUD_ID="+strconv.FormatInt(t.Target.CloudID, 10),
	)
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if sc.User != "" {
		if err := runAs(cmd, sc.User); err != nil {
			return failed("%v", err)
		}
	}
	// Output goes to a spool file the script writes itself (see spool.go).
	out := spoolPath(a.spool, t.ExecID)
	of, err := os.OpenFile(out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return failed("output file: %v", err)
	}
	cmd.Stdout, cmd.Stderr = of, of

	e.mu.Lock()
	if e.reason != "" { // killed before it started
		e.mu.Unlock()
		of.Close()
		return outcome{status: statusFor(e.reason), err: "killed before it started"}
	}
	err = cmd.Start()
	of.Close()
	if err != nil {
		e.mu.Unlock()
		interpreters.Delete(interp) // looked up again next time: it may have moved
		return failed("start %s: %v", interp, err)
	}
	e.pgid = cmd.Process.Pid
	e.mu.Unlock()
	if err := a.journal.pgid(t.ExecID, e.pgid, procStart(e.pgid)); err != nil {
		a.log.Warn("journal pgid", "exec", t.ExecID, "err", err)
	}

	exited := make(chan struct{})
	readDone := make(chan error, 1)
	go func() { readDone <- follow(a.files, out, exited, logs.lineBytes) }()
	timer := time.AfterFunc(time.Duration(t.Timeout)*time.Second, func() { e.kill(killTimeout) })
	werr := cmd.Wait()
	timer.Stop()
	close(e.done)
	// What the script wrote up to its exit is read; background children
	// that outlive it may write on, unread.
	close(exited)
	if err := <-readDone; err != nil {
		a.log.Warn("reading script output", "exec", t.ExecID, "err", err)
	}

	code := 0
	var xe *exec.ExitError
	switch {
	case werr == nil:
	case errors.As(werr, &xe):
		ws := xe.Sys().(syscall.WaitStatus)
		code = ws.ExitStatus()
		if ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	default:
		return failed("wait: %v", werr)
	}
	e.mu.Lock()
	reason := e.reason
	e.mu.Unlock()
	o := outcome{exitCode: &code}
	switch {
	case reason == killTimeout:
		o.status, o.err = schemas.HostTimeout, fmt.Sprintf("killed after the %ds timeout", t.Timeout)
	case reason != "":
		o.status, o.err = statusFor(reason), "killed: "+reason
	case code == 0:
		o.status = schemas.HostSuccess
	default:
		o.status, o.err = schemas.HostFailed, fmt.Sprintf("exit code %d", code)
	}
	return o
}

// interpreters caches where each interpreter was found on PATH: one
// lookup per agent process rather than a few stat calls per task.
var interpreters sync.Map

func lookInterpreter(name string) (string, error) {
	if p, ok := interpreters.Load(name); ok {
		return p.(string), nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", err
	}
	interpreters.Store(name, p)
	return p, nil
}

func statusFor(reason string) schemas.HostStatus {
	switch reason {
	case killTimeout:
		return schemas.HostTimeout
	case killStop:
		return schemas.HostStopped
	}
	return schemas.HostInterrupted
}

// inheritedEnv names the agent's variables a script sees. Nothing else of
// the agent's environment (its NATS credentials, say) reaches scripts.
var inheritedEnv = []string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"}

func baseEnv() []string {
	env := make([]string, 0, len(inheritedEnv)+1)
	for _, k := range inheritedEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	if _, ok := os.LookupEnv("PATH"); !ok {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	return env
}

// procStart returns a process's start time in clock ticks since boot (field
// 22 of /proc/<pid>/stat), or 0 when it cannot be read. With the pid it
// identifies a process across pid reuse.
func procStart(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// the command name (field 2) may hold spaces; fields resume after ')'
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// killOrphan kills a process group left by an earlier life of the agent,
// but only if its leader is still the process that was journaled: a pid
// reused by something else is left alone.
func killOrphan(pgid int, start uint64) {
	if pgid <= 0 || start == 0 || procStart(pgid) != start {
		return
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// killWriters SIGKILLs every process that holds one of paths open (the
// spool files of executions an earlier life of the agent started) and
// waits, up to a few seconds, until they are gone. A script whose process
// group was never journaled (the agent died between starting it and
// writing its pgid) is found this way too, and so is a child that left
// its group: nothing can write to a spool file after it has been read.
func killWriters(paths map[string]bool) {
	procs, _ := os.ReadDir("/proc")
	var pids []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if err == nil && paths[target] {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				pids = append(pids, pid)
				break
			}
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for _, pid := range pids {
		for time.Now().Before(deadline) {
			// gone, or a zombie (its files are closed)
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err != nil || strings.Contains(string(b), ") Z ") {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}
