package test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// eventMessages counts the EVENTS messages of a job's commits (batches,
// not the events in them; not the audit record of its submission).
func eventMessages(t *testing.T, s *testenv.System, id int64) int {
	t.Helper()
	n := 0
	for subj, c := range storedBySubject(t, s, schemas.StreamEvents, fmt.Sprintf("fleetjob.event.*.*.%d", id)) {
		if !strings.HasPrefix(subj, "fleetjob.event.audit.") {
			n += int(c)
		}
	}
	return n
}

// kindsOf lists the kinds of a job's events in order (not its audit).
func kindsOf(t *testing.T, s *testenv.System, id int64) []string {
	t.Helper()
	var out []string
	for _, d := range jobEvents(t, s, id, "*") {
		if k := d.Type[len(events.TypePrefix):]; !strings.HasPrefix(k, "audit.") {
			out = append(out, k)
		}
	}
	return out
}

// kvWrites counts the writes to the jobs bucket's keys as they happen
// (the bucket keeps only the last of each).
type kvWrites struct {
	mu sync.Mutex
	n  map[string]int
}

func countKVWrites(t *testing.T, s *testenv.System) *kvWrites {
	t.Helper()
	w := &kvWrites{n: map[string]int{}}
	sub, err := s.NC.Subscribe("$KV."+schemas.BucketJobs+".>", func(m *nats.Msg) {
		w.mu.Lock()
		w.n[m.Subject]++
		w.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := s.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

// state is how often job id's state was written.
func (w *kvWrites) state(id int64) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n["$KV."+schemas.BucketJobs+"."+schemas.KeyJobState(id)]
}

// oneCommit checks that one-host job id (finished, its events stored) was
// created and finished by one state write and one event message, or, when
// its task ran past the agent's started delay (a fork on a loaded
// machine), by two of each, the first carrying host.started: the started
// report writes the held commit at once (creations.go). It says which.
func oneCommit(t *testing.T, s *testenv.System, writes *kvWrites, id int64) (started bool) {
	t.Helper()
	w, e := writes.state(id), eventMessages(t, s, id)
	if w == 2 && e == 2 && slices.Contains(kindsOf(t, s, id), events.HostStarted) {
		t.Logf("job %d: its task reported started, so its first commit was written then", id)
		return true
	}
	if w != 1 || e != 1 {
		t.Errorf("job %d: %d state writes and %d event messages, want 1 and 1", id, w, e)
	}
	return false
}

// A small job that ends within its first commit's window is created and
// finished by one state write and one event message that carries all its
// events in order; one that runs longer is written at the window's end
// (it shows running while it runs), and a stop of a held job writes it
// first. Every job's events are all there either way.
func TestHeldFirstCommit(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 2, Agents: []string{"c1=127.0.0.91"}, CreateWindow: 5 * time.Second})
	const host = "127.0.0.91"
	want := []string{events.JobCreated, events.JobStarted, events.StepStarted, events.HostFinished, events.StepFinished, events.JobFinished}
	writes := countKVWrites(t, s)

	t.Run("fast job: one commit", func(t *testing.T) {
		id := submit(t, s, script("echo held", host), nil)
		if sum := waitJob(t, s, id, 20*time.Second); sum.Status != schemas.JobSuccess {
			t.Fatalf("job: %s", sum.Status)
		}
		testenv.Eventually(t, 10*time.Second, func() bool { return eventMessages(t, s, id) > 0 }, "no events")
		if started := oneCommit(t, s, writes, id); !started {
			if got := kindsOf(t, s, id); !slices.Equal(got, want) {
				t.Errorf("events %v, want %v", got, want)
			}
		}
		if lines := fullLog(t, s, id, host); !slices.Equal(lines, []string{"held"}) {
			t.Errorf("log %q", lines)
		}
	})

	t.Run("stop of a held job", func(t *testing.T) {
		// stopped at once: usually before the agent's started report,
		// while the first commit is held (the stop writes it first)
		id := submit(t, s, script("sleep 30", host), nil)
		if code, b := s.Do(t, "POST", fmt.Sprintf("/v1/jobs/%d/stop", id), nil, nil); code != 202 {
			t.Fatalf("stop: %d %s", code, b)
		}
		if sum := waitJob(t, s, id, 20*time.Second); sum.Status != schemas.JobStopped {
			t.Fatalf("job: %s", sum.Status)
		}
	})
}

// A held first commit whose job has no report within the window is
// written when the window ends: the job then shows running (its task
// dispatched). Its agent here is enrolled and heard from but takes no
// task (its heartbeat is written for it), so no report can come.
func TestHeldFirstCommitWindowEnds(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, CreateWindow: 300 * time.Millisecond})
	const id, host = "silent", "127.0.0.92"
	s.Enrol(t, id, host, t.TempDir(), "")
	ctx := t.Context()
	agents, err := s.JS.KeyValue(ctx, schemas.BucketAgents)
	if err != nil {
		t.Fatal(err)
	}
	beat := func() {
		now := time.Now().UTC()
		b, _ := json.Marshal(schemas.AgentInfo{ID: id, IP: host, Slots: 1, Version: "test", StartedAt: now, LastSeen: now})
		if _, err := agents.Put(ctx, id, b); err != nil {
			t.Error(err)
		}
	}
	beat()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for tick := time.NewTicker(time.Second); ; {
			select {
			case <-stop:
				tick.Stop()
				return
			case <-tick.C:
				beat()
			}
		}
	}()
	writes := countKVWrites(t, s)
	job1 := submit(t, s, script("true", host), nil)
	testenv.Eventually(t, 10*time.Second, func() bool { return writes.state(job1) == 1 }, "job %d's first commit never written", job1)
	// the cache follows the commit (the worker writes it after): a read
	// may come between the two
	testenv.Eventually(t, 5*time.Second, func() bool { return job(t, s, job1).Status == schemas.JobRunning },
		"job %d to show running after its window", job1)
	if n := counterSum(t, s.WorkerMetrics, "fleetjob_first_commits_held_total", "written=window_ended"); n != 1 {
		t.Errorf("%.0f first commits written as their window ended, want 1", n)
	}
	if got := kindsOf(t, s, job1); !slices.Equal(got, []string{events.JobCreated, events.JobStarted, events.StepStarted}) {
		t.Errorf("events %v", got)
	}
}

// Two worker processes, each holding its own jobs' first commits, with
// unpartitioned reports (partitioned, the process consuming a job's
// reports forwards them: TestHeldFirstCommitForwarded): a report that
// reaches the process that does not hold its job's commit finds no state,
// waits, and is folded once the other writes it. Every job ends, every
// host recorded once.
func TestHeldFirstCommitAcrossProcesses(t *testing.T) {
	t.Parallel()
	// a window long enough that a loaded machine's `true` ends within it:
	// a report that came after the window would find the job created
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"c3=127.0.0.93"}, CreateWindow: 5 * time.Second,
		SharedResults: true})
	first := s.WorkerMetrics
	s.StartWorkers(t, 1) // a second process: its own held commits
	// both take submits and reports (else none may reach the other)
	s.WaitResultPullers(t, 2)
	s.WaitPullers(t, schemas.StreamJobs, schemas.ConsumerCommands, 2)
	const n = 40
	ids := oneHostJobsSucceed(t, s, "true", "127.0.0.93", n)
	for _, id := range ids[:3] {
		if got := hostFinishedEvents(t, s, id); len(got) != 1 {
			t.Errorf("job %d: host.finished %v, want one execution once", id, got)
		}
	}
	early := counterSum(t, first, "fleetjob_reports_before_first_commit_total") +
		counterSum(t, s.WorkerMetrics, "fleetjob_reports_before_first_commit_total")
	t.Logf("%d jobs over two worker processes: %.0f reports came before their job's first commit and were delivered again", n, early)
	if early == 0 {
		t.Errorf("no report reached the process not holding its job: the case was not exercised")
	}
	if dead := deadLetters(t, s); len(dead) > 0 {
		t.Errorf("dead letters %v", dead)
	}
}

// Two worker processes with partitioned reports: the process that takes a
// small job's submit holds its first commit even when the other consumes
// the job's result partition; that one forwards the job's first reports
// to the holder. Every job is still created and finished by one state
// write and one event message, and reports were forwarded.
func TestHeldFirstCommitForwarded(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"c4=127.0.0.94"}, CreateWindow: 5 * time.Second})
	first := s.WorkerMetrics
	s.StartWorkers(t, 1) // a second process
	s.WaitResultPullers(t, 2)
	writes := countKVWrites(t, s)
	const host, n = "127.0.0.94", 20
	ids := oneHostJobsSucceed(t, s, "echo fwd", host, n)
	for _, id := range ids {
		testenv.Eventually(t, 10*time.Second, func() bool { return eventMessages(t, s, id) > 0 }, "no events of job %d", id)
		oneCommit(t, s, writes, id)
	}
	if lines := fullLog(t, s, ids[0], host); !slices.Equal(lines, []string{"fwd"}) {
		t.Errorf("log %q", lines)
	}
	fwd := counterSum(t, first, "fleetjob_reports_forwarded_total") + counterSum(t, s.WorkerMetrics, "fleetjob_reports_forwarded_total")
	held := counterSum(t, first, "fleetjob_first_commits_held_total", "written=forwarded") +
		counterSum(t, s.WorkerMetrics, "fleetjob_first_commits_held_total", "written=forwarded")
	t.Logf("%d jobs over two worker processes: %.0f reports forwarded to %.0f held commits", n, fwd, held)
	if fwd == 0 || held == 0 {
		t.Errorf("no report was forwarded to a held commit: the case was not exercised")
	}
}

// oneHostJobsSucceed submits n jobs running command on host, one after
// the other, and waits for each to succeed.
func oneHostJobsSucceed(t *testing.T, s *testenv.System, command, host string, n int) []int64 {
	t.Helper()
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = submit(t, s, script(command, host), nil)
	}
	for _, id := range ids {
		if sum := waitJob(t, s, id, 30*time.Second); sum.Status != schemas.JobSuccess || sum.Counts["success"] != 1 {
			t.Fatalf("job %d: %s %v", id, sum.Status, sum.Counts)
		}
	}
	return ids
}

// counterSum reads a counter from a registry, summed over its labels, or
// over the series with every label=value given.
func counterSum(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				have := map[string]bool{}
				for _, l := range m.GetLabel() {
					have[l.GetName()+"="+l.GetValue()] = true
				}
				if !slices.ContainsFunc(labels, func(l string) bool { return !have[l] }) {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
