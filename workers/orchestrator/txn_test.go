package orchestrator

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetjob/fleetjob/schemas"
)

// fakeDir is a directory where the listed IPs have online agents.
type fakeDir map[string]bool

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
	if diff := cmp.Diff(tx.kills, map[string][]string{"agent-10.0.0.1": {"7.0.0.1"}}); diff != "" || !tx.stopped {
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
