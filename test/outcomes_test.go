package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// This file checks how a job's end reads: what never ran, and what is
// counted. (What an interrupted host keeps: TestAgentKilledMidTask.)

func TestStoppedJobSkipsTheStepsItNeverReached(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"o1=127.0.0.51", "o2=127.0.0.52"}})
	l := newLedger(t)
	marker := fmt.Sprintf("fj-skip-%d", time.Now().UnixNano())
	body := map[string]any{
		"name": "stopped in step 0", "targets": []string{"127.0.0.51", "127.0.0.52"},
		"steps": []any{
			map[string]any{"script": map[string]any{"content": l.append("s0") + "; exec -a " + marker + " sleep 60"}},
			map[string]any{"script": map[string]any{"content": l.append("s1")}},
			map[string]any{"script": map[string]any{"content": l.append("s2")}},
		},
	}
	id := submit(t, s, body, nil)
	waitStatus(t, s, id, "127.0.0.51", schemas.HostRunning, 20*time.Second)
	waitStatus(t, s, id, "127.0.0.52", schemas.HostRunning, 20*time.Second)
	if code, b := s.Do(t, "POST", fmt.Sprintf("/v1/jobs/%d/stop", id), nil, nil); code != 202 {
		t.Fatalf("stop: %d %s", code, b)
	}
	sum := waitJob(t, s, id, 20*time.Second)
	if sum.Status != schemas.JobStopped || sum.Steps[0].Status != schemas.JobStopped {
		t.Fatalf("job %s, step 0 %s; want both stopped", sum.Status, sum.Steps[0].Status)
	}
	for i, st := range sum.Steps[1:] {
		if st.Status != schemas.StepSkipped || st.Counts[schemas.HostSkipped.String()] != 2 || len(st.Counts) != 1 {
			t.Errorf("step %d: %s %v, want skipped with 2 skipped hosts", i+1, st.Status, st.Counts)
		}
	}
	for _, h := range hosts(t, s, id) {
		want := schemas.HostSkipped
		if h.Step == 0 {
			want = schemas.HostStopped
		}
		if h.Status != want {
			t.Errorf("step %d host %s: %s, want %s", h.Step, h.Host.IP, h.Status, want)
		}
	}
	if got := count(l.lines(t)); got["s0"] != 2 || len(got) != 1 {
		t.Errorf("runs: %v, want only step 0 on both hosts", got)
	}
}

func TestJobCountsHostsNotHostSteps(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"c1=127.0.0.53", "c2=127.0.0.54"}})
	body := map[string]any{
		"name": "three steps on two hosts", "targets": []string{"127.0.0.53", "127.0.0.54"},
		"steps": []any{
			map[string]any{"script": map[string]any{"content": "true"}},
			map[string]any{"script": map[string]any{"content": "true"}},
			map[string]any{"script": map[string]any{"content": "true"}},
		},
	}
	sum := waitJob(t, s, submit(t, s, body, nil), 20*time.Second)
	if sum.Status != schemas.JobSuccess || sum.TotalHosts != 2 || sum.Counts["success"] != 2 || len(sum.Counts) != 1 {
		t.Errorf("job: %s total_hosts %d counts %v, want success with total_hosts 2 and 2 successes", sum.Status, sum.TotalHosts, sum.Counts)
	}
	for i, st := range sum.Steps {
		if st.Hosts != 2 || st.Counts["success"] != 2 {
			t.Errorf("step %d: hosts %d counts %v, want its 2 hosts succeeded", i, st.Hosts, st.Counts)
		}
	}
}
