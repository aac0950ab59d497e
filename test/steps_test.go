package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

func fourAgents() []string {
	return []string{"r1=127.0.0.31", "r2=127.0.0.32", "r3=127.0.0.33", "r4=127.0.0.34"}
}

var fourIPs = []string{"127.0.0.31", "127.0.0.32", "127.0.0.33", "127.0.0.34"}

func rollingBody(content string, mode int) map[string]any {
	return map[string]any{
		"name": "rolling", "targets": fourIPs,
		"steps": []any{map[string]any{
			"script":  map[string]any{"content": content},
			"rolling": map[string]any{"expr": "1 50% 100%", "mode": mode},
		}},
	}
}

// failOn33 fails on 127.0.0.33 (batch 2 of "1 50% 100%" on four hosts)
// until a marker file exists.
func failOn33(l ledger) string {
	return l.append("$FLEETJOB_HOST_IP") + `; if [ "$FLEETJOB_HOST_IP" = 127.0.0.33 ] && [ ! -e ` + string(l) + `.fixed ]; then exit 3; fi`
}

func TestRollingPauseRetryAndConfirm(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 2, Agents: fourAgents()})
	l := newLedger(t)
	id := submit(t, s, rollingBody(failOn33(l), schemas.RollingPauseOnFailure), nil)
	testenv.Eventually(t, 20*time.Second, func() bool { return job(t, s, id).Status == schemas.JobWaitingUser }, "pause after batch 2")
	sum := job(t, s, id)
	if sum.Steps[0].Hold != schemas.HoldFailure || sum.Steps[0].Batch != 2 || sum.Steps[0].Batches != 3 {
		t.Errorf("paused step: %+v", sum.Steps[0])
	}
	if h := hostByIP(t, s, id, "127.0.0.34"); h.Status != schemas.HostPending {
		t.Errorf("batch 3 host ran during the pause: %s", h.Status)
	}
	if code, b := s.Do(t, "POST", fmt.Sprintf("/v1/jobs/%d/steps/1/confirm", id), nil, nil); code != 404 {
		t.Errorf("operate another step: %d %s", code, b)
	}
	// fix the cause and retry only the failed host
	writeFile(t, string(l)+".fixed")
	if code, b := s.Do(t, "POST", fmt.Sprintf("/v1/jobs/%d/steps/0/retry-failed", id), nil, nil); code != 202 {
		t.Fatalf("retry-failed: %d %s", code, b)
	}
	sum = waitJob(t, s, id, 20*time.Second)
	if sum.Status != schemas.JobSuccess || sum.Counts["success"] != 4 {
		t.Fatalf("after the retry: %s %v", sum.Status, sum.Counts)
	}
	h := hostByIP(t, s, id, "127.0.0.33")
	if h.Attempt != 2 || readLog(t, s, id, "127.0.0.33", 0, 10).Attempt != 2 {
		t.Errorf("retried host: attempt %d", h.Attempt)
	}
	var first struct{ Attempt int }
	if code := s.JSON(t, "GET", fmt.Sprintf("/v1/jobs/%d/hosts/127.0.0.33/log?attempt=1", id), nil, nil, &first); code != 200 || first.Attempt != 1 {
		t.Errorf("first attempt's log: %d %+v", code, first)
	}
	if got := count(l.lines(t)); got["127.0.0.33"] != 2 || got["127.0.0.31"] != 1 || got["127.0.0.34"] != 1 {
		t.Errorf("runs per host: %v (only the failed host runs again)", got)
	}
}

func TestRollingIgnoresFailures(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: fourAgents()})
	l := newLedger(t)
	id := submit(t, s, rollingBody(failOn33(l), schemas.RollingIgnoreFailure), nil)
	sum := waitJob(t, s, id, 20*time.Second)
	if sum.Status != schemas.JobPartial || sum.Counts["success"] != 3 || sum.Counts["failed"] != 1 {
		t.Errorf("mode 2: %s %v, want partial with 3 successes", sum.Status, sum.Counts)
	}
}

func TestRollingConfirmEachBatch(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: fourAgents()})
	id := submit(t, s, rollingBody("true", schemas.RollingConfirmEach), nil)
	for batch := 1; batch <= 2; batch++ {
		testenv.Eventually(t, 20*time.Second, func() bool {
			st := job(t, s, id).Steps[0]
			return st.Hold == schemas.HoldConfirm && st.Batch == batch
		}, "confirmation after batch %d", batch)
		if code, b := s.Do(t, "POST", fmt.Sprintf("/v1/jobs/%d/steps/0/confirm", id), nil, nil); code != 202 {
			t.Fatalf("confirm: %d %s", code, b)
		}
	}
	if sum := waitJob(t, s, id, 20*time.Second); sum.Status != schemas.JobSuccess {
		t.Errorf("got %s", sum.Status)
	}
}

func TestMultiStepIgnoreAndSkip(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"m1=127.0.0.41", "m2=127.0.0.42"}})
	l := newLedger(t)
	body := map[string]any{
		"name": "three steps", "targets": []string{"127.0.0.41", "127.0.0.42"},
		"steps": []any{
			map[string]any{"name": "may fail", "on_failure": "continue", "script": map[string]any{"content": l.append("s1") + "; exit 1"}},
			map[string]any{"name": "fails", "script": map[string]any{"content": l.append("s2") + "; exit 2"}},
			map[string]any{"name": "last", "script": map[string]any{"content": l.append("s3")}},
		},
	}
	id := submit(t, s, body, nil)
	sum := waitJob(t, s, id, 20*time.Second)
	// the step the failed job never reached ends skipped, with its hosts
	if sum.Status != schemas.JobFailed || sum.CurrentStep != 1 || sum.Steps[0].Status != schemas.StepIgnored ||
		sum.Steps[2].Status != schemas.StepSkipped || sum.Steps[2].Counts[schemas.HostSkipped.String()] != 2 {
		t.Fatalf("after step 1 failed: %s at %d, steps %+v", sum.Status, sum.CurrentStep, sum.Steps)
	}
	if code, b := s.Do(t, "POST", fmt.Sprintf("/v1/jobs/%d/steps/1/skip", id), nil, nil); code != 202 {
		t.Fatalf("skip: %d %s", code, b)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		sum = job(t, s, id)
		return sum.Status == schemas.JobSuccess
	}, "the job to go on and succeed")
	if sum.Steps[1].Status != schemas.StepSkipped || sum.Steps[2].Status != schemas.JobSuccess {
		t.Errorf("steps: %+v", sum.Steps)
	}
	if got := count(l.lines(t)); got["s1"] != 2 || got["s2"] != 2 || got["s3"] != 2 {
		t.Errorf("runs: %v", got)
	}
	for _, c := range []struct {
		path string
		code int
		says string // the answer names the step as the URL does (from 0)
	}{
		{"/steps/2/skip", 409, "step 2:"}, {"/steps/2/retry-failed", 409, "retry-failed on step 2:"}, {"/steps/9/skip", 404, "no step 9"}, {"/steps/x/skip", 400, ""}, {"/steps/2/dance", 400, ""},
	} {
		if code, b := s.Do(t, "POST", fmt.Sprintf("/v1/jobs/%d%s", id, c.path), nil, nil); code != c.code || !strings.Contains(string(b), c.says) {
			t.Errorf("%s: %d %s, want %d saying %q", c.path, code, b, c.code, c.says)
		}
	}
}

// Jobs outnumbering the workers' spec cache (one spec kept) all run every
// step: a job whose spec was pushed out reads it again from its submit
// command at each commit.
func TestJobsOutnumberingTheSpecCache(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 2, SpecCache: 1, Agents: []string{"a1=127.0.0.1"}})
	var ids []int64
	for i := range 6 {
		ids = append(ids, submit(t, s, map[string]any{
			"name": fmt.Sprintf("many-%d", i), "targets": []string{"127.0.0.1"},
			"steps": []any{
				map[string]any{"script": map[string]any{"content": fmt.Sprintf("echo one %d", i)}},
				map[string]any{"script": map[string]any{"content": fmt.Sprintf("echo two %d", i)}},
			},
		}, nil))
	}
	for i, id := range ids {
		sum := waitJob(t, s, id, 30*time.Second)
		if sum.Status != schemas.JobSuccess || len(sum.Steps) != 2 {
			t.Fatalf("job %d: got %s with %d steps, want success in 2", id, sum.Status, len(sum.Steps))
		}
		for step := range 2 {
			want := fmt.Sprintf("%s %d", []string{"one", "two"}[step], i)
			if log := readLogStep(t, s, id, "127.0.0.1", step); strings.Join(log, "|") != want {
				t.Errorf("job %d step %d log %q, want %q", id, step, log, want)
			}
		}
	}
}
