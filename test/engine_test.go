package test

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

func TestHappyPathTwoAgents(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 2, Agents: []string{"a1=127.0.0.1", "a2=127.0.0.2"}})
	id := submit(t, s, script(`echo "hello from $FLEETJOB_HOST_IP"; echo "to stderr" >&2; echo "param=$GREETING"`, "127.0.0.1", "127.0.0.2"), nil)
	sum := waitJob(t, s, id, 20*time.Second)
	if sum.Status != schemas.JobSuccess || sum.Counts["success"] != 2 || sum.TotalHosts != 2 {
		t.Fatalf("job: got %s %v, want success on 2 hosts", sum.Status, sum.Counts)
	}
	if sum.StartedAt.IsZero() || sum.EndedAt.Before(sum.StartedAt) {
		t.Errorf("timestamps: started %v ended %v", sum.StartedAt, sum.EndedAt)
	}
	agents := map[string]string{}
	for _, h := range hosts(t, s, id) {
		if h.Status != schemas.HostSuccess || h.ExitCode == nil || *h.ExitCode != 0 {
			t.Errorf("host %s: got %s exit %v, want success exit 0", h.Host.IP, h.Status, h.ExitCode)
		}
		if h.StartedAt.IsZero() || h.EndedAt.IsZero() {
			t.Errorf("host %s: missing start/end", h.Host.IP)
		}
		agents[h.Host.IP] = h.AgentID
		log := readLog(t, s, id, h.Host.IP, 0, 100)
		want := []string{"hello from " + h.Host.IP, "to stderr", "param="}
		if strings.Join(log.Lines, "|") != strings.Join(want, "|") || !log.Complete || log.Total != 3 {
			t.Errorf("log of %s: got %q total %d complete %v, want %q complete", h.Host.IP, log.Lines, log.Total, log.Complete, want)
		}
	}
	if agents["127.0.0.1"] != "a1" || agents["127.0.0.2"] != "a2" {
		t.Errorf("hosts ran on %v, want 127.0.0.1 on a1 and 127.0.0.2 on a2", agents)
	}
	// (these logs rode in their results: TestInlineLogs checks the index
	// of a log in LOGS)
	var list struct {
		Items []schemas.JobSummary `json:"items"`
		Total int                  `json:"total"`
	}
	if code := s.JSON(t, "GET", "/v1/jobs?status=success&sort=updated_at&order=desc", nil, nil, &list); code != 200 || list.Total != 1 || list.Items[0].ID != id {
		t.Errorf("list: got %d %+v, want job %d", code, list, id)
	}
}

func TestEnvAndArgs(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1"}})
	body := map[string]any{
		"targets": []any{map[string]any{"cloud_id": 0, "ip": "127.0.0.1"}},
		"steps": []any{map[string]any{"type": "script", "timeout": 30, "script": map[string]any{
			"interpreter": "python3", "content": "import os,sys\nprint(os.environ['COLOR'], sys.argv[1:])",
			"args": []string{"x", "y z"}, "env": map[string]string{"COLOR": "blue"}}}},
	}
	id := submit(t, s, body, nil)
	if sum := waitJob(t, s, id, 20*time.Second); sum.Status != schemas.JobSuccess {
		t.Fatalf("got %s, want success", sum.Status)
	}
	if got := readLog(t, s, id, "127.0.0.1", 0, 10).Lines; len(got) != 1 || got[0] != "blue ['x', 'y z']" {
		t.Errorf("python output: got %q", got)
	}
}

func TestStopMidRun(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1", "a2=127.0.0.2"}})
	l := newLedger(t)
	marker := fmt.Sprintf("fj-stop-%d", time.Now().UnixNano())
	// concurrency 1: the second host is still pending when the stop arrives
	body := script(l.append("$FLEETJOB_HOST_IP")+"; exec -a "+marker+" sleep 60", "127.0.0.1", "127.0.0.2")
	body["concurrency"] = 1
	id := submit(t, s, body, nil)
	waitStatus(t, s, id, "127.0.0.1", schemas.HostRunning, 20*time.Second)
	if code, b := s.Do(t, "POST", fmt.Sprintf("/v1/jobs/%d/stop", id), nil, nil); code != 202 {
		t.Fatalf("stop: %d %s", code, b)
	}
	sum := waitJob(t, s, id, 20*time.Second)
	if sum.Status != schemas.JobStopped || sum.Counts["stopped"] != 2 {
		t.Fatalf("got %s %v, want stopped with 2 stopped hosts", sum.Status, sum.Counts)
	}
	h := hostByIP(t, s, id, "127.0.0.1")
	if h.ExitCode == nil || h.EndedAt.IsZero() {
		t.Errorf("running host: got exit %v ended %v, want the killed process's exit", h.ExitCode, h.EndedAt)
	}
	if out, _ := exec.Command("pgrep", "-f", marker).Output(); len(out) > 0 {
		t.Errorf("process group not killed: pgrep found %q", out)
	}
	if got := l.lines(t); len(got) != 1 || got[0] != "127.0.0.1" {
		t.Errorf("ran on %v, want only 127.0.0.1 (the pending host must not start)", got)
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1"}})
	body := script("echo before; sleep 30; echo after", "127.0.0.1")
	body["steps"].([]any)[0].(map[string]any)["timeout"] = 1
	id := submit(t, s, body, nil)
	sum := waitJob(t, s, id, 20*time.Second)
	h := hostByIP(t, s, id, "127.0.0.1")
	if sum.Status != schemas.JobFailed || h.Status != schemas.HostTimeout {
		t.Fatalf("got job %s host %s, want failed/timeout", sum.Status, h.Status)
	}
	if d := h.DurationMS; d < 900 || d > 10000 {
		t.Errorf("ran %d ms, want about the 1 s timeout", d)
	}
	if got := readLog(t, s, id, "127.0.0.1", 0, 10).Lines; strings.Join(got, ",") != "before" {
		t.Errorf("log: got %q, want only the line before the kill", got)
	}
}

func TestAgentOffline(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1"}})
	body := script("echo hi", "127.0.0.1", "10.255.255.1")
	body["agent_wait"] = 1
	id := submit(t, s, body, nil)
	sum := waitJob(t, s, id, 20*time.Second)
	if sum.Status != schemas.JobPartial {
		t.Errorf("job: got %s, want partial", sum.Status)
	}
	h := hostByIP(t, s, id, "10.255.255.1")
	if h.Status != schemas.HostAgentOffline || !strings.Contains(h.Error, "no online agent") {
		t.Errorf("offline host: got %s %q, want agent_offline with a reason", h.Status, h.Error)
	}
}

// A worker that takes the sweeper lease over finds the jobs that were
// waiting before it held it and the jobs created after: both time out
// waiting for their agent. No index of active jobs is written; the new
// sweeper starts from the bookmark the old one stored, which has moved
// past the jobs that had finished.
func TestSweeperTakesOverWaitingJobs(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{})
	stop := s.StartWorkers(t, 1)
	body := script("echo hi", "10.255.255.2")
	body["agent_wait"] = 1
	done := submit(t, s, body, nil)
	waitJob(t, s, done, 20*time.Second)
	body["agent_wait"] = 8
	before := submit(t, s, body, nil)
	waitStatus(t, s, before, "10.255.255.2", schemas.HostWaitingAgent, 10*time.Second)
	ctx := context.Background()
	jobs, err := s.JS.KeyValue(ctx, schemas.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	doneRec, err := jobs.Get(ctx, schemas.KeyJobState(done))
	if err != nil {
		t.Fatal(err)
	}
	bookmarks, err := s.JS.KeyValue(ctx, schemas.BucketSweep)
	if err != nil {
		t.Fatal(err)
	}
	var from uint64
	for deadline := time.Now().Add(20 * time.Second); from <= doneRec.Revision(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the sweeper's bookmark is %d, still not past finished job %d's state at %d", from, done, doneRec.Revision())
		}
		if e, err := bookmarks.Get(ctx, schemas.KeySweepFrom); err == nil {
			from, _ = strconv.ParseUint(string(e.Value()), 10, 64)
		}
	}
	stop() // its lease goes with it
	s.StartWorkers(t, 1)
	after := submit(t, s, body, nil)
	for _, id := range []int64{before, after} {
		waitJob(t, s, id, 30*time.Second)
		if h := hostByIP(t, s, id, "10.255.255.2"); h.Status != schemas.HostAgentOffline {
			t.Errorf("job %d: host %s %q, want agent_offline", id, h.Status, h.Error)
		}
	}
}

func TestAgentArrivesWhileWaiting(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1})
	body := script("echo late", "127.0.0.5")
	body["agent_wait"] = 30
	id := submit(t, s, body, nil)
	waitStatus(t, s, id, "127.0.0.5", schemas.HostWaitingAgent, 10*time.Second)
	// on purpose: the sweeper (every second) looks at the job and leaves
	// it alone until its deadline; only the agent's arrival moves it now
	time.Sleep(2500 * time.Millisecond)
	s.StartAgent(t, "late", "127.0.0.5")
	if sum := waitJob(t, s, id, 20*time.Second); sum.Status != schemas.JobSuccess {
		t.Fatalf("got %s, want success once the agent came online", sum.Status)
	}
}

func TestIdempotentResubmit(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1"}})
	l := newLedger(t)
	body := script(l.append("ran"), "127.0.0.1")
	hdr := map[string]string{"Idempotency-Key": "deploy-42"}
	first := submit(t, s, body, hdr)
	second := submit(t, s, body, hdr)
	waitJob(t, s, first, 20*time.Second)
	third := submit(t, s, body, hdr) // after the job finished, too
	if second != first || third != first {
		t.Fatalf("ids: %d %d %d, want the same job", first, second, third)
	}
	other := submit(t, s, body, map[string]string{"Idempotency-Key": "deploy-43"})
	waitJob(t, s, other, 20*time.Second)
	if other == first {
		t.Fatalf("a different key got the same job %d", first)
	}
	if got := l.lines(t); len(got) != 2 {
		t.Errorf("script ran %d times, want 2 (one per key)", len(got))
	}
}

func TestLogRangesAcrossChunks(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1"}})
	id := submit(t, s, script(`for i in $(seq 0 2999); do echo "line $i"; done`, "127.0.0.1"), nil)
	waitJob(t, s, id, 30*time.Second)
	for _, c := range []struct{ from, limit, want int }{
		{0, 10, 10}, {500, 100, 100}, {510, 20, 20}, {1000, 600, 600}, {2990, 100, 10}, {3000, 10, 0}, {5000, 10, 0},
	} {
		got := readLog(t, s, id, "127.0.0.1", c.from, c.limit)
		if len(got.Lines) != c.want || got.From != c.from || got.To != c.from+c.want || got.Total != 3000 || !got.Complete {
			t.Errorf("from %d limit %d: got %d lines from %d to %d total %d complete %v; want %d lines",
				c.from, c.limit, len(got.Lines), got.From, got.To, got.Total, got.Complete, c.want)
			continue
		}
		for i, line := range got.Lines {
			if want := fmt.Sprintf("line %d", c.from+i); line != want {
				t.Errorf("from %d: line %d is %q, want %q", c.from, i, line, want)
				break
			}
		}
	}
}

func TestRedisFlushedMidJob(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1", "a2=127.0.0.2"}})
	before := submit(t, s, script("echo earlier", "127.0.0.1"), nil)
	waitJob(t, s, before, 20*time.Second)
	id := submit(t, s, script(`for i in $(seq 1 1500); do echo "n $i"; done; sleep 1.5; echo done`, "127.0.0.1", "127.0.0.2"), nil)
	waitStatus(t, s, id, "127.0.0.1", schemas.HostRunning, 20*time.Second)
	if err := s.RDB.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	// reads during the run are answered from JetStream
	if sum := job(t, s, id); sum.Status != schemas.JobRunning {
		t.Errorf("during the run after FLUSHALL: got %s, want running", sum.Status)
	}
	sum := waitJob(t, s, id, 30*time.Second)
	if sum.Status != schemas.JobSuccess || sum.Counts["success"] != 2 {
		t.Fatalf("got %s %v, want success on both hosts", sum.Status, sum.Counts)
	}
	if err := s.RDB.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts(t, s, id) {
		if h.Status != schemas.HostSuccess || h.ExitCode == nil || h.EndedAt.IsZero() {
			t.Errorf("host %s after flush: %+v", h.Host.IP, h)
		}
	}
	got := readLog(t, s, id, "127.0.0.2", 1499, 3)
	if strings.Join(got.Lines, ",") != "n 1500,done" || got.Total != 1501 || !got.Complete {
		t.Errorf("log after flush: got %q total %d complete %v", got.Lines, got.Total, got.Complete)
	}
	var list struct {
		Items []schemas.JobSummary `json:"items"`
		Total int                  `json:"total"`
	}
	if code := s.JSON(t, "GET", "/v1/jobs?order=asc", nil, nil, &list); code != 200 || list.Total != 2 ||
		list.Items[0].ID != before || list.Items[1].ID != id || list.Items[1].Status != schemas.JobSuccess {
		t.Errorf("list after flush: %d %+v", code, list)
	}
}

func TestBadInputQueuesNothing(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{})
	big := strings.Repeat("x", schemas.MaxScriptBytes+1)
	cases := []struct {
		name    string
		body    any
		headers map[string]string
		code    int
		detail  string
	}{
		{"no token", script("true", "127.0.0.1"), map[string]string{"Authorization": ""}, 401, "bearer"},
		{"wrong token", script("true", "127.0.0.1"), map[string]string{"Authorization": "Bearer nope"}, 401, "bearer"},
		{"malformed", `{"steps": [`, nil, 400, "JSON"},
		{"trailing", `{"steps": []} {}`, nil, 400, "trailing"},
		{"unknown field", `{"stepz": []}`, nil, 400, "stepz"},
		{"wrong type", `{"concurrency": "ten"}`, nil, 400, "concurrency"},
		{"empty hosts", script("true"), nil, 400, "no target hosts"},
		{"bad ip", script("true", "10.0.0.300"), nil, 400, "not an IP"},
		{"no steps", map[string]any{"targets": []string{"127.0.0.1"}}, nil, 400, "at least one step"},
		{"empty script", script("  ", "127.0.0.1"), nil, 400, "empty script"},
		{"script too large", script(big, "127.0.0.1"), nil, 400, "at most"},
		{"unknown interpreter", map[string]any{"targets": []string{"127.0.0.1"}, "steps": []any{map[string]any{"script": map[string]any{"content": "x", "interpreter": "perl"}}}}, nil, 400, "unknown interpreter"},
		{"negative timeout", map[string]any{"targets": []string{"127.0.0.1"}, "steps": []any{map[string]any{"timeout": -1, "script": map[string]any{"content": "x"}}}}, nil, 400, "timeout"},
		{"bad env name", map[string]any{"targets": []string{"127.0.0.1"}, "steps": []any{map[string]any{"script": map[string]any{"content": "x", "env": map[string]string{"1X": "y"}}}}}, nil, 400, "environment variable"},
		{"oversize body", `{"name":"` + strings.Repeat("y", 5<<20) + `"}`, nil, 413, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := s.CommandCount(t)
			code, b := s.Do(t, "POST", "/v1/jobs", c.body, c.headers)
			if code != c.code || !strings.Contains(string(b), c.detail) {
				t.Errorf("got %d %s, want %d mentioning %q", code, b, c.code, c.detail)
			}
			if c.code != 413 && !strings.Contains(string(b), `"status"`) {
				t.Errorf("not a problem document: %s", b)
			}
			if after := s.CommandCount(t); after != before {
				t.Errorf("%d commands queued by a bad request", after-before)
			}
		})
	}
	for _, c := range []struct {
		path string
		code int
	}{
		{"/v1/jobs/abc", 400}, {"/v1/jobs/999", 404}, {"/v1/jobs?size=5000", 400}, {"/v1/jobs?status=nope", 400},
		{"/v1/jobs?sort=color", 400}, {"/v1/jobs/999/hosts", 404}, {"/v1/jobs/1/hosts/nohost/log", 400},
	} {
		if code, b := s.Do(t, "GET", c.path, nil, nil); code != c.code {
			t.Errorf("GET %s: got %d %s, want %d", c.path, code, b, c.code)
		}
	}
	if code, _ := s.Do(t, "POST", "/v1/jobs/999/stop", nil, nil); code != 404 {
		t.Errorf("stop unknown job: got %d, want 404", code)
	}
}

func TestStopFinishedJobRefused(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1"}})
	id := submit(t, s, script("true", "127.0.0.1"), nil)
	waitJob(t, s, id, 20*time.Second)
	before := s.CommandCount(t)
	if code, b := s.Do(t, "POST", fmt.Sprintf("/v1/jobs/%d/stop", id), nil, nil); code != 409 || !strings.Contains(string(b), "already finished") {
		t.Errorf("stop a finished job: got %d %s, want 409", code, b)
	}
	if s.CommandCount(t) != before {
		t.Error("a refused stop was queued")
	}
}

func TestHostAndAgentFilters(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1"}})
	body := script(`[ "$FLEETJOB_HOST_IP" = 127.0.0.1 ]`, "127.0.0.1", "10.255.255.2", "10.255.255.3")
	body["agent_wait"] = 1
	id := submit(t, s, body, nil)
	waitJob(t, s, id, 20*time.Second)
	var page struct {
		Items []struct{ Host schemas.Host } `json:"items"`
		Total int                           `json:"total"`
	}
	if code := s.JSON(t, "GET", fmt.Sprintf("/v1/jobs/%d/hosts?status=agent_offline&size=1&page=2", id), nil, nil, &page); code != 200 ||
		page.Total != 2 || len(page.Items) != 1 || page.Items[0].Host.IP != "10.255.255.3" {
		t.Errorf("filtered page: %d %+v", code, page)
	}
	if code, _ := s.Do(t, "GET", fmt.Sprintf("/v1/jobs/%d/hosts?status=bogus", id), nil, nil); code != 400 {
		t.Errorf("bad status filter: %d", code)
	}
	var agents struct{ Total int }
	if s.JSON(t, "GET", "/v1/agents?online=true", nil, nil, &agents); agents.Total != 1 {
		t.Errorf("online agents: %d", agents.Total)
	}
	if s.JSON(t, "GET", "/v1/agents?online=false", nil, nil, &agents); agents.Total != 0 {
		t.Errorf("offline agents: %d", agents.Total)
	}
	if code, _ := s.Do(t, "GET", "/v1/agents?label=nope", nil, nil); code != 400 {
		t.Errorf("bad label filter: %d", code)
	}
}

// A stop sent while its job's submit command still waits in the stream
// (no worker runs yet) stops the job once workers start. The submit is
// ahead of the stop in the stream, so a worker may create the job and
// dispatch its host before the stop is applied, or take the stop first
// and retry it until the job exists: either way the job and its host end
// stopped, and the script, if it started at all, was killed and is never
// run again.
func TestStopBeforeWorkersTakeTheJob(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Agents: []string{"a1=127.0.0.1"}})
	l := newLedger(t)
	id := submit(t, s, script(l.append("ran")+"; sleep 30", "127.0.0.1"), nil)
	if sum := job(t, s, id); sum.Status != schemas.JobWaiting {
		t.Fatalf("queued job: %s, want waiting", sum.Status)
	}
	if code, b := s.Do(t, "POST", fmt.Sprintf("/v1/jobs/%d/stop", id), nil, nil); code != 202 {
		t.Fatalf("stop a queued job: %d %s", code, b)
	}
	s.StartWorkers(t, 2)
	// a lost stop leaves the script sleeping 30 s: the job would not end in 20
	if sum := waitJob(t, s, id, 20*time.Second); sum.Status != schemas.JobStopped {
		t.Errorf("got %s, want stopped", sum.Status)
	}
	for _, h := range hosts(t, s, id) {
		if h.Status != schemas.HostStopped {
			t.Errorf("host %s ended %s (%s), want stopped", h.Host.IP, h.Status, h.Error)
		}
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return tasksSettled(t, s) || len(l.lines(t)) > 1 },
		"the task acked or purged, or run again")
	if got := l.lines(t); len(got) > 1 {
		t.Errorf("script ran %d times, want at most once", len(got))
	}
}

func TestScriptsDoNotSeeTheAgentsEnvironment(t *testing.T) {
	t.Setenv("FLEETJOB_TEST_SECRET", "hunter2")
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1"}})
	id := submit(t, s, script(`echo "[$FLEETJOB_TEST_SECRET]"; test -n "$PATH"`, "127.0.0.1"), nil)
	if sum := waitJob(t, s, id, 20*time.Second); sum.Status != schemas.JobSuccess {
		t.Fatalf("got %s (PATH missing?)", sum.Status)
	}
	if got := readLog(t, s, id, "127.0.0.1", 0, 5).Lines; len(got) != 1 || got[0] != "[]" {
		t.Errorf("the script saw the agent's environment: %q", got)
	}
}

func TestHighRiskScripts(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1"}})
	before := s.CommandCount(t)
	code, b := s.Do(t, "POST", "/v1/jobs", script("cd /tmp\nsudo rm -rf /", "127.0.0.1"), nil)
	if code != 400 || !strings.Contains(string(b), `line 2 matches high-risk rule \"rm-root\"`) {
		t.Errorf("rm -rf /: got %d %s", code, b)
	}
	// the octans surface answers failures with HTTP 200 and code -1
	code, b = s.Do(t, "POST", "/api/run", map[string]any{"nodes": []string{"127.0.0.1"}, "name": "bomb", "tasks": ":(){ :|:& };:"}, nil) // octans takes the admin bearer token too
	if code != 200 || !strings.Contains(string(b), `"code":-1`) || !strings.Contains(string(b), "fork-bomb") {
		t.Errorf("fork bomb through octans: %d %s", code, b)
	}
	if s.CommandCount(t) != before {
		t.Error("an intercepted script was queued")
	}
	id := submit(t, s, script("echo maintenance; exit 0; shutdown -r now", "127.0.0.1"), nil)
	sum := waitJob(t, s, id, 20*time.Second)
	if len(sum.Warnings) != 1 || sum.Warnings[0].RuleID != "shutdown-reboot" || sum.Warnings[0].Line != 1 {
		t.Errorf("scan finding not recorded on the job: %+v", sum.Warnings)
	}
}

func TestSensitiveParamsMaskedInLogs(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1"}})
	body := map[string]any{"targets": []string{"127.0.0.1"}, "steps": []any{map[string]any{"script": map[string]any{
		"content": `echo "user=$1 pass=$2 token=$TOKEN"`, "args": []string{"alice", "s3cr3t-pw"},
		"env": map[string]string{"TOKEN": "tok-123"}, "sensitive": true}}}}
	id := submit(t, s, body, nil)
	waitJob(t, s, id, 20*time.Second)
	if got := readLog(t, s, id, "127.0.0.1", 0, 5).Lines; len(got) != 1 || got[0] != "user=****** pass=****** token=******" {
		t.Errorf("sensitive values in the log: %q", got)
	}
}

// A job that has not ended when it nears the jobs' retention is failed
// with the reason, its waiting hosts with it, before its spec and state
// could age out of JetStream under it.
func TestJobOutlivingItsRetentionFails(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, JobRetention: schemas.RetentionMargin + 3*time.Second})
	body := script("echo hi", "10.255.255.3")
	body["agent_wait"] = 600
	id := submit(t, s, body, nil)
	sum := waitJob(t, s, id, 30*time.Second)
	if sum.Status != schemas.JobFailed {
		t.Fatalf("job: got %s, want failed", sum.Status)
	}
	h := hostByIP(t, s, id, "10.255.255.3")
	if !strings.Contains(h.Error, "retention") {
		t.Errorf("host: got %s %q, want the retention named", h.Status, h.Error)
	}
}
