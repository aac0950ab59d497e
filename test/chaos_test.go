package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/api/native"
	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// The fault-injection cases (make chaos). Each prints what it counted.

// Case 8: 200 concurrent submissions with one idempotency key make exactly
// one job, and every caller is told its id.
func TestChaosConcurrentIdempotentSubmissions(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 2, Agents: []string{"i1=127.0.1.201"}})
	l, out := newLedger(t), newLedger(t)
	body := script(l.append("ran")+"; "+out.noisy(3, "0"), "127.0.1.201")
	before := s.CommandCount(t)
	const n = 200
	ids := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var out native.SubmitResponse
			if code := s.JSON(t, "POST", "/v1/jobs", body, map[string]string{"Idempotency-Key": "storm-1"}, &out); code != 202 {
				t.Errorf("submit %d: %d", i, code)
			}
			ids[i] = out.ID
		})
	}
	wg.Wait()
	distinct := map[int64]int{}
	for _, id := range ids {
		distinct[id]++
	}
	if len(distinct) != 1 {
		t.Fatalf("%d submissions made jobs %v, want one", n, distinct)
	}
	sum := waitJob(t, s, ids[0], 20*time.Second)
	var list struct{ Total int }
	s.JSON(t, "GET", "/v1/jobs", nil, nil, &list)
	runs := len(l.lines(t))
	lines, lost, dup := out.logAudit(t, s, logRef{ids[0], "127.0.1.201"})
	t.Logf("case 8: %d submissions → %d distinct id, %d command(s) stored, %d job(s) listed, script ran %d time(s), job %s; log audit: %d lines, %d lost, %d duplicated",
		n, len(distinct), s.CommandCount(t)-before, list.Total, runs, sum.Status, lines, lost, dup)
	if list.Total != 1 || runs != 1 || s.CommandCount(t)-before != 1 || lost+dup != 0 {
		t.Errorf("want exactly one job, one command, one run and every line once")
	}
}

// Case 6: Redis stalled (CLIENT PAUSE) and then flushed: job and host reads
// keep answering from JetStream within their timeouts, and the cache
// rebuilds once Redis is back.
func TestChaosRedisStalledAndFlushed(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"r1=127.0.1.202"}})
	id := submit(t, s, script("echo before", "127.0.1.202"), nil)
	waitJob(t, s, id, 20*time.Second)
	ctx := context.Background()
	if err := s.RDB.Do(ctx, "CLIENT", "PAUSE", "4000", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sum := job(t, s, id)
	rows := hosts(t, s, id)
	stalled := time.Since(start)
	if sum.Status != schemas.JobSuccess || len(rows) != 1 || rows[0].Status != schemas.HostSuccess {
		t.Errorf("reads during the stall: %s %+v", sum.Status, rows)
	}
	if stalled > 3500*time.Millisecond {
		t.Errorf("reads during a stall took %s; they should fall back to JetStream well before it ends", stalled)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return s.RDB.Ping(ctx).Err() == nil }, "redis back")
	s.RDB.FlushAll(ctx)
	next := submit(t, s, script("echo after", "127.0.1.202"), nil)
	waitJob(t, s, next, 20*time.Second)
	var list struct {
		Items []schemas.JobSummary
		Total int
	}
	s.JSON(t, "GET", "/v1/jobs?order=asc", nil, nil, &list)
	n, _ := s.RDB.Exists(ctx, fmt.Sprintf("{fj}:job:%d", id)).Result()
	t.Logf("case 6: reads answered in %s during a 4 s pause; after FLUSHALL the list has %d jobs, job %d cached again: %v",
		stalled.Round(time.Millisecond), list.Total, id, n == 1)
	if list.Total != 2 || list.Items[0].ID != id || n != 1 {
		t.Errorf("cache not rebuilt after the flush: %+v", list)
	}
}

// Case 7: poison commands. One that can never succeed is recorded as a dead
// letter at once; one that keeps failing is redelivered a bounded number of
// times first. A poisoned submission leaves its job failed, with the reason.
func TestChaosPoisonCommands(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1})
	ctx := context.Background()
	ack, err := s.JS.Publish(ctx, schemas.SubjSubmit, []byte(`{"v":1,"spec":{"name":"poison","steps":[]}}`))
	if err != nil {
		t.Fatal(err)
	}
	bad := int64(ack.Sequence)
	if _, err := s.JS.Publish(ctx, schemas.SubjStop, []byte(`{"v":1,"job_id":987654}`)); err != nil {
		t.Fatal(err)
	}
	var dls struct {
		Items []schemas.DeadLetter
		Total int
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		return s.JSON(t, "GET", "/v1/deadletters", nil, nil, &dls) == 200 && dls.Total == 2
	}, "two dead letters")
	byJob := map[int64]schemas.DeadLetter{}
	for _, d := range dls.Items {
		byJob[d.JobID] = d
	}
	sub, stop := byJob[bad], byJob[987654]
	if sub.Deliveries != 1 || !strings.Contains(sub.Reason, "at least one step") || sub.Subject != schemas.SubjSubmit {
		t.Errorf("poisoned submit: %+v", sub)
	}
	if stop.Deliveries != uint64(schemas.DefaultTopology().MaxDeliver) || !strings.Contains(stop.Reason, "before the job exists") {
		t.Errorf("stop of a job that never comes: %+v", stop)
	}
	sum := job(t, s, bad)
	if sum.Status != schemas.JobFailed || !strings.Contains(sum.Reason, "could not be processed") {
		t.Errorf("the poisoned job: %s %q", sum.Status, sum.Reason)
	}
	// JOBS keeps its commands (the submit is the job's spec): what must
	// not be left is a poison command the workers still have to take
	c, _ := s.JS.Consumer(ctx, schemas.StreamJobs, schemas.ConsumerCommands)
	info, _ := c.Info(ctx)
	t.Logf("case 7: %d dead letters (submit after %d delivery, stop after %d deliveries); job %d %s: %q; %d commands pending, %d unacknowledged",
		dls.Total, sub.Deliveries, stop.Deliveries, bad, sum.Status, sum.Reason, info.NumPending, info.NumAckPending)
	if info.NumPending != 0 || info.NumAckPending != 0 {
		t.Errorf("poison commands still to be taken: %d pending, %d unacknowledged", info.NumPending, info.NumAckPending)
	}
}

// Case 5: the all-in-one server (embedded NATS, R1) killed with SIGKILL
// mid-run and restarted on the same store: every accepted job reaches a
// final state, no script runs twice, and each host is reported once.
func TestChaosAllInOneRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	natsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	env := []string{"FLEETJOB_TOKEN=chaos", "FLEETJOB_LOG_LEVEL=warn", "REDIS_URL=", "FLEETJOB_TASK_ACK_WAIT=2s", "FLEETJOB_ACK_WAIT=2s"}
	args := []string{"serve", "--data-dir", dir, "--http-addr", httpAddr, "--nats-addr", natsAddr, "--agent-id", "solo"}
	s := &testenv.System{APIURL: "http://" + httpAddr, Token: "chaos"}
	up := func() {
		s.WaitReady(t, 30*time.Second)
		s.WaitAgent(t, "solo")
	}
	p := startProc(t, "", env, args...)
	up()
	l, out := newLedger(t), newLedger(t)
	const n = 20
	ids := make([]int64, n)
	for i := range n {
		ids[i] = submit(t, s, script(l.append("$FLEETJOB_EXEC_ID")+"; "+out.noisy(4, "0.1"), "127.0.0.1"), nil)
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return len(l.lines(t)) >= 3 }, "some scripts started")
	p.kill()
	startProc(t, "", env, args...)
	up()
	final := map[string]int{}
	for _, id := range ids {
		sum := waitJob(t, s, id, 60*time.Second)
		final[sum.Status]++
		h := hosts(t, s, id)
		if len(h) != 1 || !(h[0].Status == schemas.HostSuccess || h[0].Status == schemas.HostInterrupted) {
			t.Errorf("job %d host: %+v", id, h)
		}
	}
	runs := count(l.lines(t))
	twice := 0
	for _, c := range runs {
		if c > 1 {
			twice++
		}
	}
	// scripts killed with the server stop mid-way: the ledger holds what
	// they wrote, and the log must hold exactly that
	var logs []logRef
	for _, id := range ids {
		logs = append(logs, logRef{id, "127.0.0.1"})
	}
	lines, lost, dup := out.logAudit(t, s, logs...)
	t.Logf("case 5: %d jobs accepted, all final: %v; %d scripts started, %d started twice; log audit: %d lines, %d lost, %d duplicated",
		n, final, len(runs), twice, lines, lost, dup)
	if final[schemas.JobSuccess]+final[schemas.JobFailed] != n || twice != 0 || lost+dup != 0 {
		t.Errorf("want every job final (success, or failed when interrupted), no script run twice and every line once")
	}
}

// Case 2: a worker frozen (SIGSTOP, at a failpoint: it has computed a new
// job state from a report and not committed it) past its ack wait while
// another carries on, then thawed (SIGCONT): its stale write loses its
// compare-and-set (asserted, not left to timing), and every host is still
// run and reported exactly once.
func TestChaosWorkerPausedPastAckWait(t *testing.T) {
	t.Parallel()
	var agents, ips []string
	for i := 21; i <= 28; i++ {
		ip := fmt.Sprintf("127.0.1.%d", i)
		agents, ips = append(agents, fmt.Sprintf("p%d=%s", i, ip)), append(ips, ip)
	}
	s := testenv.Start(t, testenv.Options{Agents: agents, AckWait: 2 * time.Second})
	env := []string{"NATS_URL=" + s.NATSURL, "REDIS_URL=" + s.RedisURL, "FLEETJOB_ACK_WAIT=2s", "FLEETJOB_LOG_LEVEL=error",
		"FLEETJOB_NATS_CREDS=" + s.NATS.CredsFile(t, natsauth.RoleWorker)}
	m1, m2 := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	// The first worker freezes itself (SIGSTOP, a failpoint) holding the
	// new state computed from its first report, before committing it: the
	// stale write the fence must refuse is certain, not a matter of timing.
	frozen := startProc(t, "", append(env, "FLEETJOB_FAILPOINTS=report-computed=1:stop"),
		"worker", "--workers", "2", "--metrics-addr", m1)
	s.WaitResultPullers(t, 1)
	l, out := newLedger(t), newLedger(t)
	body := script(l.append("$FLEETJOB_EXEC_ID")+"; "+out.noisy(4, "0.05"), ips...)
	body["concurrency"] = 2
	id := submit(t, s, body, nil)
	testenv.Eventually(t, 30*time.Second, frozen.stopped, "the worker froze before its first commit")
	frozenAt := time.Now()
	startProc(t, "", env, "worker", "--workers", "2", "--metrics-addr", m2)
	// past the 2 s ack wait its messages go to the other worker, which
	// commits past the state the frozen one holds
	testenv.Eventually(t, 30*time.Second, func() bool { return job(t, s, id).Counts["success"] >= 1 },
		"the other worker finished a host")
	frozenFor := time.Since(frozenAt)
	frozen.signal(syscall.SIGCONT)
	sum := waitJob(t, s, id, 60*time.Second)
	once := onceEach(t, s, id, len(ips), l)
	conflicts := metric(t, m1, "fleetjob_state_cas_conflicts_total")
	lines, lost, dup := out.logAudit(t, s, hostLogs(id, ips)...)
	t.Logf("case 2: job %s %v after a worker froze %s (ack wait 2 s) holding an uncommitted state; %d/%d hosts ran once and were announced once; %.0f stale commits of the thawed worker refused (CAS); log audit: %d lines, %d lost, %d duplicated",
		sum.Status, sum.Counts, frozenFor.Round(100*time.Millisecond), once, len(ips), conflicts, lines, lost, dup)
	if sum.Status != schemas.JobSuccess || sum.Counts["success"] != len(ips) || lost+dup != 0 {
		t.Errorf("job %s %v; want every host successful and every line once", sum.Status, sum.Counts)
	}
	if conflicts < 1 {
		t.Errorf("the thawed worker's stale commit was not refused (%v CAS conflicts)", conflicts)
	}
}

// metric reads one counter from a process's /metrics.
func metric(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Logf("metrics of %s: %v", addr, err)
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// Case 3: an agent SIGKILLed mid-task and restarted. Its script outlives
// it and keeps writing; the restarted agent kills nothing it should not,
// publishes the lines the LOGS stream is missing, reports the execution
// interrupted, and runs it never again. Every line the script wrote is in
// the log exactly once.
func TestChaosAgentKilledMidTask(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, TaskAckWait: 2 * time.Second})
	dir := t.TempDir()
	env := []string{"NATS_URL=" + s.NATSURL, "FLEETJOB_TASK_ACK_WAIT=2s", "FLEETJOB_LOG_LEVEL=warn",
		"FLEETJOB_NATS_CREDS=" + s.AgentCredsFile(t, "c3", dir)}
	args := []string{"agent", "--id", "c3", "--ip", "127.0.1.203", "--data-dir", dir}
	s.Enrol(t, "c3", "127.0.1.203", dir, "")
	a := startProc(t, "", env, args...)
	s.WaitAgent(t, "c3")

	runs, out := newLedger(t), newLedger(t)
	const n = 60
	id := submit(t, s, script(runs.append("$FLEETJOB_EXEC_ID")+"; "+out.noisy(n, "0.03"), "127.0.1.203"), nil)
	testenv.Eventually(t, 20*time.Second, func() bool { return len(out.lines(t)) >= 10 }, "the script well under way")
	a.kill()
	killedAt := len(out.lines(t))
	// the orphaned script finishes on its own while the agent is dead
	testenv.Eventually(t, 20*time.Second, func() bool { return len(out.lines(t)) == n }, "the orphan to finish")
	startProc(t, "", env, args...)
	waitStatus(t, s, id, "127.0.1.203", schemas.HostInterrupted, 20*time.Second)
	sum := waitJob(t, s, id, 10*time.Second)
	lines, lost, dup := out.logAudit(t, s, logRef{id, "127.0.1.203"})
	// the delivery the killed agent held comes back after the task ack
	// wait and must be acked without running again
	testenv.Eventually(t, 30*time.Second, func() bool { return tasksSettled(t, s) || len(runs.lines(t)) > 1 },
		"the redelivered task acked, or run again")
	started := len(runs.lines(t))
	next := submit(t, s, script("echo again", "127.0.1.203"), nil)
	after := waitJob(t, s, next, 20*time.Second)
	t.Logf("case 3: agent killed after %d of %d lines; job %s, host interrupted; script started %d time(s); log audit: %d ledger lines, %d lost, %d duplicated; next job on the restarted agent %s",
		killedAt, n, sum.Status, started, lines, lost, dup, after.Status)
	if started != 1 || lines != n || lost != 0 || dup != 0 || sum.Status != schemas.JobFailed || after.Status != schemas.JobSuccess {
		t.Errorf("want one run, every line once, the job failed (interrupted) and the agent working again")
	}
}

// Case 1: a worker SIGKILLed at exact points of handling a result (a
// failpoint in the worker kills it): after it committed the new state but
// before its effects (the next host's task, the events, the cache), after
// the effects but before it acked the report, and after the ack. Another
// worker takes over after the ack wait; every host runs once, every result
// is recorded and announced once, the cache shows the final job, and every
// log line is there once.
func TestChaosWorkerKilledAroundAck(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, point string
		hit         int
	}{
		{"committed-not-applied", "report-committed", 3},
		// (not "report-committed" #8, 4 hosts × (started, finished): a
		// host's two reports can arrive in one batch, one commit)
		{"committed-finishing-the-job", "report-committed-final", 1},
		{"applied-not-acked", "report-done", 3},
		{"acked", "report-acked", 3},
	}
	for n, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var agents, ips []string
			for i := range 4 {
				ip := fmt.Sprintf("127.0.1.%d", 100+10*n+i)
				agents, ips = append(agents, fmt.Sprintf("k%d%d=%s", n, i, ip)), append(ips, ip)
			}
			s := testenv.Start(t, testenv.Options{Agents: agents, AckWait: 2 * time.Second})
			env := []string{"NATS_URL=" + s.NATSURL, "REDIS_URL=" + s.RedisURL, "FLEETJOB_ACK_WAIT=2s", "FLEETJOB_LOG_LEVEL=error",
				"FLEETJOB_NATS_CREDS=" + s.NATS.CredsFile(t, natsauth.RoleWorker)}
			doomed := startProc(t, "", append(env, fmt.Sprintf("FLEETJOB_FAILPOINTS=%s=%d", c.point, c.hit)), "worker")
			runs, out := newLedger(t), newLedger(t)
			body := script(runs.append("$FLEETJOB_EXEC_ID")+"; "+out.noisy(5, "0.04"), ips...)
			body["concurrency"] = 1
			id := submit(t, s, body, nil)
			select {
			case <-doomed.done:
			case <-time.After(30 * time.Second):
				t.Fatalf("the worker never reached %s #%d", c.point, c.hit)
			}
			startProc(t, "", env, "worker")
			sum := waitJob(t, s, id, 60*time.Second)
			once := onceEach(t, s, id, len(ips), runs)
			lines, lost, dup := out.logAudit(t, s, hostLogs(id, ips)...)
			// and the job's own events, each once
			kinds := map[string]int{}
			for _, d := range jobEvents(t, s, id, "*") {
				kinds[strings.TrimPrefix(d.Type, events.TypePrefix)]++
			}
			jobEventsOnce := 0
			for _, k := range []string{events.JobCreated, events.JobStarted, events.StepStarted, events.StepFinished, events.JobFinished} {
				if kinds[k] == 1 {
					jobEventsOnce++
				} else {
					t.Errorf("%s published %d times", k, kinds[k])
				}
			}
			t.Logf("case 1 (%s: killed at %s #%d): job %s %v as cached; %d/%d hosts ran once and were announced once; %d/5 job events once; log audit: %d lines, %d lost, %d duplicated",
				c.name, c.point, c.hit, sum.Status, sum.Counts, once, len(ips), jobEventsOnce, lines, lost, dup)
			if sum.Status != schemas.JobSuccess || sum.Counts["success"] != len(ips) || lost+dup != 0 {
				t.Errorf("want the job successful on every host and every line once")
			}
		})
	}
}
