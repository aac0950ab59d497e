package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// lockedBuffer collects the system's log output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func marker(t *testing.T, what string) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "fj-" + what + "-" + hex.EncodeToString(b)
}

// TestSensitiveValuesAreNowhere submits a job with a sensitive env value
// and a sensitive arg, then looks for them everywhere: every message of
// every stream, every key of every KV bucket, every Redis key, the dead
// letters, the server's logs and every process's command line, while the
// script runs and after. They are in the script's own environment only.
func TestSensitiveValuesAreNowhere(t *testing.T) {
	t.Parallel()
	logs := &lockedBuffer{}
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1"}, LogOutput: logs})
	argM, envM := marker(t, "arg"), marker(t, "env")
	markers := []string{argM, envM}
	body := map[string]any{"name": "secrets", "targets": []string{"127.0.0.1"}, "steps": []any{map[string]any{"script": map[string]any{
		"content": "echo \"start arg=$1 env=$FJ_SECRET\"\nsleep 3\necho done", "args": []string{argM, "plain"},
		"env": map[string]string{"FJ_SECRET": envM}, "sensitive": true}}}}
	id := submit(t, s, body, nil)
	waitStatus(t, s, id, "127.0.0.1", schemas.HostRunning, 20*time.Second)

	// while it runs: the script's own environment has them (so the
	// search below can find them), no command line does
	pid := scriptPID(t, id)
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range markers {
		if !bytes.Contains(environ, []byte(m)) {
			t.Errorf("marker %s is not in the environment of the script (pid %d)", m, pid)
		}
	}
	noCmdline(t, markers)
	where := nowhere(t, s, markers, true)
	if !strings.Contains(where, `"sealed"`) {
		t.Errorf("no sealed values found in the streams while the job ran")
	}

	if sum := waitJob(t, s, id, 30*time.Second); sum.Status != schemas.JobSuccess {
		t.Fatalf("job: %+v", sum)
	}
	if got := readLog(t, s, id, "127.0.0.1", 0, 5).Lines; len(got) != 2 || got[0] != "start arg=****** env=******" {
		t.Errorf("log: %q, want the values masked", got)
	}
	// a dead letter of a sensitive job's command holds what the command
	// held: sealed values (this one fails the worker's validation)
	deadLetterOf(t, s, id)
	code, dead := s.Do(t, "GET", "/v1/deadletters", nil, nil)
	if code != 200 || !strings.Contains(string(dead), "sealed") {
		t.Fatalf("dead letters: %d %s", code, dead)
	}
	for _, m := range markers {
		if strings.Contains(string(dead), m) {
			t.Errorf("dead letters hold %s", m)
		}
	}
	noCmdline(t, markers)
	nowhere(t, s, markers, false)
	if logs.String() == "" {
		t.Fatal("no log output captured")
	}
	for _, m := range markers {
		if strings.Contains(logs.String(), m) {
			t.Errorf("the server logged %s", m)
		}
	}
	_, answer := s.Do(t, "GET", fmt.Sprintf("/v1/jobs/%d", id), nil, nil)
	for _, m := range markers {
		if strings.Contains(string(answer), m) {
			t.Errorf("the job's answer holds %s", m)
		}
	}
}

// scriptPID finds the running script of job id: the process its agent
// started with the job's id in its environment and its script file on
// its command line.
func scriptPID(t *testing.T, id int64) int {
	t.Helper()
	var pid int
	want := []byte("\x00FLEETJOB_JOB_ID=" + strconv.FormatInt(id, 10) + "\x00")
	testenv.Eventually(t, 10*time.Second, func() bool {
		procs, _ := os.ReadDir("/proc")
		for _, p := range procs {
			n, err := strconv.Atoi(p.Name())
			if err != nil {
				continue
			}
			env, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "environ"))
			cmd, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
			// the interpreter reads the script from its descriptor 3; its
			// children (sleep) share the environment but not that argument
			if bytes.Contains(env, want) && bytes.Contains(env, []byte("\x00FJ_SECRET=")) && bytes.Contains(cmd, []byte("/dev/fd/3")) {
				pid = n
				return true
			}
		}
		return false
	}, "the script of job %d running", id)
	return pid
}

// noCmdline checks /proc/*/cmdline of every process.
func noCmdline(t *testing.T, markers []string) {
	t.Helper()
	procs, _ := os.ReadDir("/proc")
	n := 0
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil {
			continue
		}
		n++
		for _, m := range markers {
			if bytes.Contains(cmd, []byte(m)) {
				t.Errorf("process %s has %s on its command line: %q", p.Name(), m, cmd)
			}
		}
	}
	if n == 0 {
		t.Fatal("no command lines read")
	}
}

// nowhere searches every message of every stream (KV buckets and object
// stores are streams too), every key of every KV bucket and every Redis
// key for markers. It returns everything it read from the streams.
func nowhere(t *testing.T, s *testenv.System, markers []string, running bool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var all strings.Builder
	check := func(where string, data []byte) {
		all.Write(data)
		for _, m := range markers {
			if bytes.Contains(data, []byte(m)) {
				t.Errorf("%s holds %s: %.300s", where, m, data)
			}
		}
	}
	names := s.JS.StreamNames(ctx)
	seen := map[string]bool{}
	for name := range names.Name() {
		seen[name] = true
		st, err := s.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				t.Fatalf("%s seq %d: %v", name, seq, err)
			}
			hdr, _ := json.Marshal(m.Header)
			check(fmt.Sprintf("%s seq %d (%s)", name, seq, m.Subject), append(hdr, m.Data...))
		}
	}
	if names.Err() != nil {
		t.Fatal(names.Err())
	}
	for _, want := range []string{schemas.StreamJobs, schemas.StreamLogs, "KV_" + schemas.BucketJobs, "KV_" + schemas.BucketEnrolled} {
		if !seen[want] {
			t.Errorf("stream %s not searched", want)
		}
	}
	if running && !seen[schemas.StreamTasks] {
		t.Errorf("stream %s not searched", schemas.StreamTasks)
	}
	buckets := s.JS.KeyValueStoreNames(ctx)
	for b := range buckets.Name() {
		kv, err := s.JS.KeyValue(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for k := range keys.Keys() {
			if e, err := kv.Get(ctx, k); err == nil {
				check("KV "+b+" key "+k, e.Value())
			}
		}
	}
	var cursor uint64
	for {
		keys, next, err := s.RDB.Scan(ctx, cursor, "*", 500).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			check("redis "+k, redisValue(ctx, s, k))
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	return all.String()
}

// redisValue reads a Redis key of any type as bytes.
func redisValue(ctx context.Context, s *testenv.System, k string) []byte {
	var v any
	switch s.RDB.Type(ctx, k).Val() {
	case "string":
		v = s.RDB.Get(ctx, k).Val()
	case "hash":
		v = s.RDB.HGetAll(ctx, k).Val()
	case "list":
		v = s.RDB.LRange(ctx, k, 0, -1).Val()
	case "set":
		v = s.RDB.SMembers(ctx, k).Val()
	case "zset":
		v = s.RDB.ZRangeWithScores(ctx, k, 0, -1).Val()
	case "stream":
		v = s.RDB.XRange(ctx, k, "-", "+").Val()
	}
	b, _ := json.Marshal(v)
	return append([]byte(k), b...)
}

// deadLetterOf publishes the stored (sealed) spec of job id again as a
// submit command the worker refuses for good, and waits for its dead letter.
func deadLetterOf(t *testing.T, s *testenv.System, id int64) {
	t.Helper()
	ctx := context.Background()
	spec := s.Spec(t, id)
	if spec.Steps[0].Script.Sealed == nil {
		t.Fatalf("stored spec not sealed: %+v", spec.Steps[0].Script)
	}
	spec.Steps[0].Timeout = -1 // invalid: the worker refuses it for good
	b, _ := json.Marshal(schemas.SubmitCommand{V: schemas.MessageVersion, Spec: spec, SubmittedAt: time.Now()})
	if _, err := s.JS.Publish(ctx, schemas.SubjSubmit, b); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		_, dead := s.Do(t, "GET", "/v1/deadletters", nil, nil)
		return strings.Contains(string(dead), "sealed")
	}, "a dead letter of the sealed command")
}

// TestSensitiveValuesRefused: values that cannot be sealed to an enrolled
// agent, or sealed values sent by a client, are refused with a 400 and
// nothing is queued.
func TestSensitiveValuesRefused(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1"}})
	before := s.CommandCount(t)
	job := func(targets []string, sc map[string]any) map[string]any {
		return map[string]any{"targets": targets, "steps": []any{map[string]any{"script": sc}}}
	}
	cases := []struct {
		name string
		body map[string]any
		want string
	}{
		{"host without an agent", job([]string{"127.0.0.1", "10.9.9.9"}, map[string]any{"content": "true", "env": map[string]string{"K": "v"}, "sensitive": true}),
			"cannot seal sensitive values for host 10.9.9.9: no enrolled agent"},
		{"sealed sent by a client", job([]string{"127.0.0.1"}, map[string]any{"content": "true", "sealed": map[string]any{"sender": "X", "box": "Y"}}),
			"steps[0].script.sealed"},
	}
	for _, c := range cases {
		code, b := s.Do(t, "POST", "/v1/jobs", c.body, nil)
		if code != 400 || !strings.Contains(string(b), c.want) || !strings.Contains(string(b), `"status":400`) {
			t.Errorf("%s: %d %s, want 400 saying %q", c.name, code, b, c.want)
		}
	}
	// BlueKing answers in its envelope: HTTP 200, result false
	var env map[string]any
	code := s.JSON(t, "POST", "/api/v3/fast_execute_script", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1",
		"script_content": "ZWNobyAkMQ==", "script_language": 1, "account_alias": "root", "script_param": "czNjcmV0", "is_param_sensitive": 1,
		"target_server": map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "10.9.9.9"}}}},
		map[string]string{"Authorization": "", "X-Bkapi-Authorization": fmt.Sprintf(`{"bk_app_code": "ci", "bk_app_secret": %q}`, s.Token)}, &env)
	if msg, _ := env["message"].(string); code != 200 || env["result"] != false || !strings.Contains(msg, "no enrolled agent") {
		t.Errorf("BlueKing: %d %v, want 200 with result false saying there is no enrolled agent", code, env)
	}
	if after := s.CommandCount(t); after != before {
		t.Errorf("%d commands queued by refused jobs", after-before)
	}
	// a host with an agent is fine; so is a non-sensitive job to a host without one
	submit(t, s, job([]string{"127.0.0.1"}, map[string]any{"content": "true", "env": map[string]string{"K": "v"}, "sensitive": true}), nil)
	submit(t, s, job([]string{"10.9.9.9"}, map[string]any{"content": "true", "env": map[string]string{"K": "v"}}), nil)
}

// TestSensitiveArgsPython: a python script gets its sensitive args in
// sys.argv, through its environment; the log masks them.
func TestSensitiveArgsPython(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1"}})
	argM := marker(t, "arg")
	id := submit(t, s, map[string]any{"targets": []string{"127.0.0.1"}, "steps": []any{map[string]any{"script": map[string]any{
		"interpreter": "python3", "content": "import os, sys\nprint(len(sys.argv) - 1, sys.argv[1], sys.argv[2], 'FLEETJOB_ARGS_JSON' in os.environ)",
		"args": []string{argM, "two words"}, "sensitive": true}}}}, nil)
	if sum := waitJob(t, s, id, 30*time.Second); sum.Status != schemas.JobSuccess {
		t.Fatalf("job: %+v", sum)
	}
	if got := readLog(t, s, id, "127.0.0.1", 0, 5).Lines; len(got) != 1 || got[0] != "2 ****** ****** False" {
		t.Errorf("log: %q", got)
	}
}

// TestSensitiveOutputOfInterruptedScript kills an agent process while its
// script runs; the orphaned script prints its sensitive values, and the
// restarted agent publishes that output from its spool file (its journal
// holds the task sealed): masked.
func TestSensitiveOutputOfInterruptedScript(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, TaskAckWait: 2 * time.Second})
	dir := t.TempDir()
	env := []string{"NATS_URL=" + s.NATSURL, "FLEETJOB_TASK_ACK_WAIT=2s", "FLEETJOB_LOG_LEVEL=warn"}
	args := []string{"agent", "--id", "pz", "--ip", "127.0.0.22", "--data-dir", "agent-data"}
	s.Enrol(t, "pz", "127.0.0.22", filepath.Join(dir, "agent-data"), "") // its keys, its enrolment
	a := startProc(t, dir, env, args...)
	s.WaitAgent(t, "pz")

	l := newLedger(t)
	argM, envM := marker(t, "arg"), marker(t, "env")
	id := submit(t, s, map[string]any{"targets": []string{"127.0.0.22"}, "steps": []any{map[string]any{"script": map[string]any{
		"content": "sleep 2; echo \"x=$1 y=$Y\"; " + l.append("printed") + "; sleep 60",
		"args":    []string{argM}, "env": map[string]string{"Y": envM}, "sensitive": true}}}}, nil)
	waitStatus(t, s, id, "127.0.0.22", schemas.HostRunning, 20*time.Second)
	a.kill()
	testenv.Eventually(t, 10*time.Second, func() bool { return len(l.lines(t)) > 0 }, "the orphaned script to print")
	startProc(t, dir, env, args...)
	waitStatus(t, s, id, "127.0.0.22", schemas.HostInterrupted, 20*time.Second)
	if got := readLog(t, s, id, "127.0.0.22", 0, 5).Lines; len(got) != 1 || got[0] != "x=****** y=******" {
		t.Errorf("log of the interrupted script: %q, want the values masked", got)
	}
	nowhere(t, s, []string{argM, envM}, false)
}

// TestSensitiveRetry retries a failed sensitive step: the new attempt's
// task carries the same sealed values, and the agent opens them again.
func TestSensitiveRetry(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1"}})
	flag := filepath.Join(t.TempDir(), "second")
	id := submit(t, s, map[string]any{"targets": []string{"127.0.0.1"}, "steps": []any{map[string]any{"script": map[string]any{
		"content": fmt.Sprintf("echo \"$1 $T\"; [ -e %s ] || { touch %s; exit 1; }", flag, flag),
		"args":    []string{"s3cret-arg"}, "env": map[string]string{"T": "s3cret-env"}, "sensitive": true}}}}, nil)
	if sum := waitJob(t, s, id, 30*time.Second); sum.Status != schemas.JobFailed {
		t.Fatalf("first attempt: %+v", sum)
	}
	if code, b := s.Do(t, "POST", fmt.Sprintf("/v1/jobs/%d/steps/0/retry-failed", id), nil, nil); code/100 != 2 {
		t.Fatalf("retry: %d %s", code, b)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return job(t, s, id).Status == schemas.JobSuccess }, "the retried job to succeed")
	if got := readLog(t, s, id, "127.0.0.1", 0, 5).Lines; len(got) != 1 || got[0] != "****** ******" {
		t.Errorf("log of the retry: %q", got)
	}
}

// TestSensitiveValuesForAnotherAgent: values sealed to the agent a host
// had at submit do not open on another agent that serves it later; the
// host fails and says why.
func TestSensitiveValuesForAnotherAgent(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1})
	s.StartAgent(t, "first", "127.0.0.1")() // enrolled, then gone
	id := submit(t, s, map[string]any{"targets": []string{"127.0.0.1"}, "agent_wait": 60, "steps": []any{map[string]any{"script": map[string]any{
		"content": "echo ran", "env": map[string]string{"T": "s3cret"}, "sensitive": true}}}}, nil)
	waitStatus(t, s, id, "127.0.0.1", schemas.HostWaitingAgent, 20*time.Second)
	s.StartAgent(t, "second", "127.0.0.1")
	waitJob(t, s, id, 30*time.Second)
	h := hostByIP(t, s, id, "127.0.0.1")
	if h.Status != schemas.HostFailed || h.AgentID != "second" || !strings.Contains(h.Error, "not sealed to this agent") {
		t.Errorf("host: %s on %s, error %q; want failed on second, saying the values were not sealed to it", h.Status, h.AgentID, h.Error)
	}
	if got := readLog(t, s, id, "127.0.0.1", 0, 5).Lines; len(got) != 0 {
		t.Errorf("the script ran: %q", got)
	}
}
