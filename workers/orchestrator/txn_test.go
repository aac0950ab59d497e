package orchestrator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetjob/fleetjob/internal/jobstate"
	"github.com/fleetjob/fleetjob/schemas"
)

// fakeDir is a directory where the listed IPs have online agents.
type fakeDir map[string]bool

func (d fakeDir) Gone(h schemas.Host, now time.Time) bool {
	_, ok := d.Lookup(h, now)
	return !ok
}

func (d fakeDir) Agent(id string) (schemas.AgentInfo, bool) {
	ip, ok := strings.CutPrefix(id, "agent-")
	if !ok || !d[ip] {
		return schemas.AgentInfo{}, false
	}
	return schemas.AgentInfo{ID: id, IP: ip}, true
}

func (d fakeDir) Lookup(h schemas.Host, _ time.Time) (schemas.AgentInfo, bool) {
	if d[h.IP] {
		return schemas.AgentInfo{ID: "agent-" + h.IP, IP: h.IP}, true
	}
	return schemas.AgentInfo{}, false
}

var t0 = time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)

func newJob(t *testing.T, concurrency int, ips ...string) (*schemas.JobSpec, *schemas.JobState) {
	t.Helper()
	spec := &schemas.JobSpec{Concurrency: concurrency, AgentWait: 10, Steps: []schemas.Step{{Script: &schemas.Script{Content: "true"}, Timeout: 60}}}
	for _, ip := range ips {
		spec.Targets = append(spec.Targets, schemas.Host{IP: ip})
	}
	if err := spec.Normalize(); err != nil {
		t.Fatal(err)
	}
	return spec, schemas.NewJobState(7, spec, t0)
}

func statuses(st *schemas.JobState) []string {
	var out []string
	for _, s := range st.Steps[st.Step].Hosts.Status {
		out = append(out, s.String())
	}
	return out
}

func finished(host int, s schemas.HostStatus) schemas.Report {
	code := 0
	return schemas.Report{Kind: schemas.ReportFinished, JobID: 7, Host: host, Attempt: 1, Status: s, ExitCode: &code}
}

func TestDispatchHonoursConcurrency(t *testing.T) {
	spec, st := newJob(t, 2, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	dir := fakeDir{"10.0.0.1": true, "10.0.0.2": true, "10.0.0.3": true}
	tx := newTxn(spec, st, t0, dir)
	tx.advance()
	if got, want := statuses(st), []string{"dispatched", "dispatched", "pending"}; !cmp.Equal(got, want) {
		t.Fatalf("after start: %v, want %v", got, want)
	}
	if len(tx.tasks) != 2 || tx.tasks[0].agent != "agent-10.0.0.1" || tx.tasks[1].task.ExecID != "7.0.1.1" {
		t.Errorf("tasks: %+v", tx.tasks)
	}
	tx = newTxn(spec, st, t0.Add(time.Second), dir)
	tx.apply(finished(0, schemas.HostSuccess))
	tx.advance()
	if got, want := statuses(st), []string{"success", "dispatched", "dispatched"}; !cmp.Equal(got, want) {
		t.Fatalf("after one result: %v, want %v", got, want)
	}
	if len(tx.tasks) != 1 || tx.tasks[0].task.Host != 2 {
		t.Errorf("next task: %+v", tx.tasks)
	}
}

func TestResultsCountOnce(t *testing.T) {
	spec, st := newJob(t, 0, "10.0.0.1", "10.0.0.2")
	dir := fakeDir{"10.0.0.1": true, "10.0.0.2": true}
	newTxn(spec, st, t0, dir).advance()
	tx := newTxn(spec, st, t0.Add(time.Second), dir)
	tx.apply(finished(0, schemas.HostFailed))
	tx.apply(finished(0, schemas.HostSuccess)) // a duplicate, or a late report
	tx.apply(schemas.Report{Kind: schemas.ReportStarted, Host: 0, Attempt: 1})
	tx.apply(finished(1, schemas.HostSuccess))
	tx.advance()
	if got := statuses(st); !cmp.Equal(got, []string{"failed", "success"}) {
		t.Errorf("statuses %v", got)
	}
	if len(tx.results) != 2 || st.Status != schemas.JobPartial || !tx.finished {
		t.Errorf("results %d, job %s finished %v; want 2 results, partial, finished", len(tx.results), st.Status, tx.finished)
	}
	for _, r := range []schemas.Report{finished(5, schemas.HostSuccess), {Kind: schemas.ReportFinished, Step: 3}, {Kind: schemas.ReportFinished, Host: 1, Attempt: 2, Status: schemas.HostSuccess}} {
		tx := newTxn(spec, st, t0, dir)
		tx.apply(r) // out of range or another attempt: ignored, no panic
		if tx.changed {
			t.Errorf("report %+v changed the state", r)
		}
	}
}

func TestOutcome(t *testing.T) {
	for _, c := range []struct {
		results []schemas.HostStatus
		want    string
	}{
		{[]schemas.HostStatus{schemas.HostSuccess, schemas.HostSuccess}, schemas.JobSuccess},
		{[]schemas.HostStatus{schemas.HostSuccess, schemas.HostTimeout}, schemas.JobPartial},
		{[]schemas.HostStatus{schemas.HostFailed, schemas.HostAgentOffline}, schemas.JobFailed},
	} {
		spec, st := newJob(t, 0, "10.0.0.1", "10.0.0.2")
		dir := fakeDir{"10.0.0.1": true, "10.0.0.2": true}
		newTxn(spec, st, t0, dir).advance()
		tx := newTxn(spec, st, t0, dir)
		for i, r := range c.results {
			tx.apply(finished(i, r))
		}
		tx.advance()
		if st.Status != c.want || st.Steps[0].Status != c.want {
			t.Errorf("%v: job %s step %s, want %s", c.results, st.Status, st.Steps[0].Status, c.want)
		}
	}
}

func TestDeadlines(t *testing.T) {
	spec, st := newJob(t, 0, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	dir := fakeDir{"10.0.0.1": true, "10.0.0.2": true}
	newTxn(spec, st, t0, dir).advance()
	tx := newTxn(spec, st, t0, dir)
	tx.apply(schemas.Report{Kind: schemas.ReportStarted, Host: 1, Attempt: 1})
	tx.advance()
	if got := statuses(st); !cmp.Equal(got, []string{"dispatched", "running", "waiting_agent"}) {
		t.Fatalf("statuses %v", got)
	}
	// 5 s later nothing has expired
	tx = newTxn(spec, st, t0.Add(5*time.Second), dir)
	tx.advance()
	if tx.changed {
		t.Errorf("something expired after 5 s: %v", statuses(st))
	}
	// the agent of 10.0.0.2 vanishes; 11 s passes the 10 s agent wait
	delete(dir, "10.0.0.2")
	tx = newTxn(spec, st, t0.Add(11*time.Second), dir)
	tx.advance()
	if got := statuses(st); !cmp.Equal(got, []string{"dispatched", "interrupted", "agent_offline"}) {
		t.Errorf("after 11 s: %v", got)
	}
	// the dispatched task was never started: given up after wait+slack+lag
	tx = newTxn(spec, st, t0.Add(10*time.Second+startSlack+reportLag+2*time.Second), dir)
	tx.advance()
	if got := statuses(st); got[0] != "agent_offline" || st.Status != schemas.JobFailed {
		t.Errorf("after the start deadline: %v job %s", got, st.Status)
	}
}

func TestRunningPastTimeout(t *testing.T) {
	spec, st := newJob(t, 0, "10.0.0.1")
	dir := fakeDir{"10.0.0.1": true}
	newTxn(spec, st, t0, dir).advance()
	tx := newTxn(spec, st, t0, dir)
	tx.apply(schemas.Report{Kind: schemas.ReportStarted, Attempt: 1})
	tx.advance()
	tx = newTxn(spec, st, t0.Add(60*time.Second+runSlack+2*time.Second), dir)
	tx.advance()
	if got := statuses(st); got[0] != "timeout" {
		t.Errorf("got %v, want timeout", got)
	}
}

func TestStop(t *testing.T) {
	spec, st := newJob(t, 1, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	dir := fakeDir{"10.0.0.1": true, "10.0.0.2": true, "10.0.0.3": true}
	newTxn(spec, st, t0, dir).advance()
	tx := newTxn(spec, st, t0, dir)
	tx.apply(schemas.Report{Kind: schemas.ReportStarted, Host: 0, Attempt: 1})
	tx.stop("admin", "")
	tx.advance()
	if got := statuses(st); !cmp.Equal(got, []string{"running", "stopped", "stopped"}) || st.Status != schemas.JobStopping {
		t.Fatalf("after stop: %v %s", got, st.Status)
	}
	if diff := cmp.Diff(tx.kills, map[agentRef][]string{{pool: "a", id: "agent-10.0.0.1"}: {"7.0.0.1"}}, cmp.AllowUnexported(agentRef{})); diff != "" || !tx.stopped {
		t.Errorf("kills (-got +want)\n%s", diff)
	}
	tx = newTxn(spec, st, t0.Add(time.Second), dir)
	tx.apply(finished(0, schemas.HostStopped))
	tx.advance()
	if st.Status != schemas.JobStopped || !tx.finished {
		t.Errorf("job %s, want stopped", st.Status)
	}
	// an agent that never answers: the stop grace ends it
	spec, st = newJob(t, 0, "10.0.0.1")
	newTxn(spec, st, t0, dir).advance()
	tx = newTxn(spec, st, t0, dir)
	tx.apply(schemas.Report{Kind: schemas.ReportStarted, Attempt: 1})
	tx.stop("admin", "")
	tx.advance()
	newTxn(spec, st, t0.Add(stopGrace+time.Second), dir).advance()
	if got := statuses(st); got[0] != "stopped" || st.Status != schemas.JobStopped {
		t.Errorf("after the stop grace: %v %s", got, st.Status)
	}
}

func TestResendRebuildsDispatchedTasks(t *testing.T) {
	spec, st := newJob(t, 0, "10.0.0.1", "10.0.0.2")
	dir := fakeDir{"10.0.0.1": true, "10.0.0.2": true}
	first := newTxn(spec, st, t0, dir)
	first.advance()
	tx := newTxn(spec, st, t0.Add(3*time.Second), dir)
	tx.resend()
	if len(tx.tasks) != 2 || tx.tasks[0].task != first.tasks[0].task {
		t.Errorf("resent %+v, want the same tasks as first sent", tx.tasks)
	}
}

func rollingJob(t *testing.T, expr string, mode int, n int) (*schemas.JobSpec, *schemas.JobState, fakeDir) {
	t.Helper()
	var ips []string
	dir := fakeDir{}
	for i := 1; i <= n; i++ {
		ip := fmt.Sprintf("10.0.0.%d", i)
		ips, dir[ip] = append(ips, ip), true
	}
	spec, st := newJob(t, 0, ips...)
	spec.Steps[0].Rolling = &schemas.Rolling{Expr: expr, Mode: mode}
	return spec, st, dir
}

// finishAll reports every dispatched host of the current step with the
// status from result (default success).
func finishAll(spec *schemas.JobSpec, st *schemas.JobState, dir fakeDir, result map[int]schemas.HostStatus) *txn {
	tx := newTxn(spec, st, t0, dir)
	for i, s := range st.Steps[st.Step].Hosts.Status {
		if s == schemas.HostDispatched {
			want := schemas.HostSuccess
			if r, ok := result[i]; ok {
				want = r
			}
			r := finished(i, want)
			r.Step = st.Step
			tx.apply(r)
		}
	}
	tx.advance()
	return tx
}

func TestRollingPausesOnFailure(t *testing.T) {
	spec, st, dir := rollingJob(t, "1 50% 100%", schemas.RollingPauseOnFailure, 4)
	newTxn(spec, st, t0, dir).advance()
	if got := statuses(st); !cmp.Equal(got, []string{"dispatched", "pending", "pending", "pending"}) {
		t.Fatalf("batch 1: %v", got)
	}
	finishAll(spec, st, dir, nil)
	if got := statuses(st); !cmp.Equal(got, []string{"success", "dispatched", "dispatched", "pending"}) {
		t.Fatalf("batch 2 (50%% of 4): %v", got)
	}
	finishAll(spec, st, dir, map[int]schemas.HostStatus{2: schemas.HostFailed})
	if st.Status != schemas.JobWaitingUser || st.Steps[0].Hold != schemas.HoldFailure || statuses(st)[3] != "pending" {
		t.Fatalf("after a failure in batch 2: job %s hold %q %v", st.Status, st.Steps[0].Hold, statuses(st))
	}
	if err := jobstate.CheckOp(st, schemas.OpConfirm, 1); err == nil {
		t.Error("an operation on another step was allowed")
	}
	tx := newTxn(spec, st, t0, dir)
	if err := tx.op(schemas.OpCommand{Op: schemas.OpRetryFailed, By: "ops"}); err != nil {
		t.Fatal(err)
	}
	tx.advance()
	if got := statuses(st); got[2] != "dispatched" || st.Steps[0].Hosts.AttemptOf(2) != 2 || tx.tasks[0].task.ExecID != "7.0.2.2" {
		t.Fatalf("retry: %v attempt %d tasks %+v", got, st.Steps[0].Hosts.AttemptOf(2), tx.tasks)
	}
	// a late report from the first attempt changes nothing
	late := newTxn(spec, st, t0, dir)
	late.apply(finished(2, schemas.HostFailed))
	if late.changed {
		t.Error("a report of an earlier attempt was applied")
	}
	r := finished(2, schemas.HostSuccess)
	r.Attempt = 2
	tx = newTxn(spec, st, t0, dir)
	tx.apply(r)
	tx.advance()
	if got := statuses(st); got[3] != "dispatched" || st.Status != schemas.JobRunning {
		t.Fatalf("batch 3 after the retry: %v %s", got, st.Status)
	}
	finishAll(spec, st, dir, nil)
	if st.Status != schemas.JobSuccess {
		t.Errorf("job %s, want success", st.Status)
	}
}

func TestRollingIgnoresFailuresInMode2(t *testing.T) {
	spec, st, dir := rollingJob(t, "1 50% 100%", schemas.RollingIgnoreFailure, 4)
	newTxn(spec, st, t0, dir).advance()
	finishAll(spec, st, dir, nil)
	finishAll(spec, st, dir, map[int]schemas.HostStatus{2: schemas.HostFailed})
	if got := statuses(st); got[3] != "dispatched" {
		t.Fatalf("mode 2 did not go on: %v", got)
	}
	finishAll(spec, st, dir, nil)
	if st.Status != schemas.JobPartial {
		t.Errorf("job %s, want partial", st.Status)
	}
}

func TestRollingConfirmsEachBatch(t *testing.T) {
	spec, st, dir := rollingJob(t, "2", schemas.RollingConfirmEach, 4)
	newTxn(spec, st, t0, dir).advance()
	finishAll(spec, st, dir, nil)
	if st.Steps[0].Hold != schemas.HoldConfirm || statuses(st)[2] != "pending" {
		t.Fatalf("no confirmation asked: %q %v", st.Steps[0].Hold, statuses(st))
	}
	if err := jobstate.CheckOp(st, schemas.OpIgnoreError, 0); err == nil {
		t.Error("ignore_error allowed without a failure")
	}
	tx := newTxn(spec, st, t0, dir)
	if err := tx.op(schemas.OpCommand{Op: schemas.OpConfirm}); err != nil {
		t.Fatal(err)
	}
	tx.advance()
	finishAll(spec, st, dir, nil)
	if st.Status != schemas.JobSuccess || st.Steps[0].Hold != "" {
		t.Errorf("after the last batch: %s %q", st.Status, st.Steps[0].Hold)
	}
}

func TestMaxFailPercentAbortsTheStep(t *testing.T) {
	spec, st, dir := rollingJob(t, "2", schemas.RollingIgnoreFailure, 6)
	spec.Steps[0].MaxFailPercent = 20
	newTxn(spec, st, t0, dir).advance()
	finishAll(spec, st, dir, map[int]schemas.HostStatus{0: schemas.HostFailed, 1: schemas.HostFailed})
	if got := statuses(st); !cmp.Equal(got[2:], []string{"skipped", "skipped", "skipped", "skipped"}) || st.Status != schemas.JobFailed {
		t.Errorf("after 2 of 6 failed with a 20%% limit: %v %s", got, st.Status)
	}
	if got, want := st.Reason, "step 0: more than 20% of the step's hosts failed"; got != want {
		t.Errorf("reason: got %q, want %q (steps are numbered from 0, as clients number them)", got, want)
	}
}

func TestMultiStepFailureModes(t *testing.T) {
	dir := fakeDir{"10.0.0.1": true}
	spec := &schemas.JobSpec{AgentWait: 10, Targets: []schemas.Host{{IP: "10.0.0.1"}}, Steps: []schemas.Step{
		{Script: &schemas.Script{Content: "a"}, OnFailure: schemas.OnFailureContinue},
		{Script: &schemas.Script{Content: "b"}},
		{Script: &schemas.Script{Content: "c"}},
	}}
	if err := spec.Normalize(); err != nil {
		t.Fatal(err)
	}
	st := schemas.NewJobState(7, spec, t0)
	newTxn(spec, st, t0, dir).advance()
	finishAll(spec, st, dir, map[int]schemas.HostStatus{0: schemas.HostFailed})
	if st.Steps[0].Status != schemas.StepIgnored || st.Step != 1 {
		t.Fatalf("step 1 failure with on_failure=continue: %s, at step %d", st.Steps[0].Status, st.Step+1)
	}
	finishAll(spec, st, dir, map[int]schemas.HostStatus{0: schemas.HostFailed})
	if st.Status != schemas.JobFailed || st.Step != 1 {
		t.Fatalf("step 2 failure ends the job: %s at step %d", st.Status, st.Step+1)
	}
	// the operator ignores it; the job goes on to step 3 and succeeds
	tx := newTxn(spec, st, t0, dir)
	if err := tx.op(schemas.OpCommand{Step: 1, Op: schemas.OpIgnoreError}); err != nil {
		t.Fatal(err)
	}
	tx.advance()
	if !tx.reopened || st.Step != 2 || statuses(st)[0] != "dispatched" {
		t.Fatalf("after ignore_error: reopened %v step %d %v", tx.reopened, st.Step+1, statuses(st))
	}
	finishAll(spec, st, dir, nil)
	if st.Status != schemas.JobSuccess {
		t.Errorf("job %s, want success", st.Status)
	}
}
