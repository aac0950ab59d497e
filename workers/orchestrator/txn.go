package orchestrator

import (
	"fmt"
	"strconv"
	"time"

	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// Deadline slack around agents and stops.
const (
	startSlack = 30 * time.Second // NotAfter = dispatch + agent wait + startSlack
	reportLag  = 15 * time.Second // time for a report to travel back
	stopGrace  = 15 * time.Second // running hosts of a stopped job wait this long for the agent's word
	runSlack   = 60 * time.Second // a running host with no result past timeout + runSlack ends as timeout
)

// Directory answers which online agent serves a host.
type Directory interface {
	Lookup(h schemas.Host, now time.Time) (schemas.AgentInfo, bool)
}

// routedTask is a task and the agent it goes to.
type routedTask struct {
	agent string
	task  schemas.Task
}

type hostRef struct{ step, host int }

// txn applies reports and deadlines to one job's state. It is pure: it
// decides, and the caller commits (CAS) and then performs the effects it
// collected.
type txn struct {
	spec *schemas.JobSpec
	st   *schemas.JobState
	now  time.Time
	dir  Directory

	changed  bool
	stopped  bool // this txn moved the job to stopping
	tasks    []routedTask
	results  []schemas.HostResult
	touched  map[hostRef]*statuscache.HostRow
	events   []events.Event
	kills    map[string][]string // agent → exec ids
	finished bool
}

func newTxn(spec *schemas.JobSpec, st *schemas.JobState, now time.Time, dir Directory) *txn {
	return &txn{spec: spec, st: st, now: now, dir: dir, touched: map[hostRef]*statuscache.HostRow{}}
}

func (t *txn) jobID() string { return strconv.FormatInt(t.st.ID, 10) }

func (t *txn) emit(kind, subject, id string, data any) {
	t.events = append(t.events, events.Event{Kind: kind, Subject: subject, ID: id, Time: t.now, Data: data})
}

func (t *txn) target(step, host int) schemas.Host { return t.spec.Steps[step].Targets[host] }

// row returns the cache row of a host, creating it from the table.
func (t *txn) row(step, host int) *statuscache.HostRow {
	ref := hostRef{step, host}
	if r, ok := t.touched[ref]; ok {
		return r
	}
	r := &statuscache.HostRow{}
	r.Step, r.Index, r.Host, r.Attempt = step, host, t.target(step, host), 1
	t.touched[ref] = r
	return r
}

// set moves a host to a new status and records the change.
func (t *txn) set(step, host int, s schemas.HostStatus) *statuscache.HostRow {
	hs := t.st.Steps[step].Hosts
	hs.Set(host, s, t.st.Sec(t.now))
	t.changed = true
	r := t.row(step, host)
	r.Status, r.Since = s, t.now
	return r
}

// finalize ends a host with a final status decided here (not by an agent).
func (t *txn) finalize(step, host int, s schemas.HostStatus, reason string) {
	hs := t.st.Steps[step].Hosts
	was, since := hs.Status[host], t.st.At(hs.Since[host])
	r := t.set(step, host, s)
	r.EndedAt, r.Error = t.now, reason
	if was == schemas.HostRunning {
		r.StartedAt = since
	}
	t.results = append(t.results, r.HostResult)
	t.emit(events.HostFinished, t.jobID(), fmt.Sprintf("%d.%d.%d", t.st.ID, step, host), r.HostResult)
}

// apply folds one report into the state. Reports about hosts that are
// already final are ignored: each host's result is recorded exactly once.
func (t *txn) apply(r schemas.Report) {
	if r.Kind == schemas.ReportKick || r.Step < 0 || r.Step >= len(t.st.Steps) {
		return
	}
	hs := t.st.Steps[r.Step].Hosts
	if r.Host < 0 || r.Host >= len(hs.Status) || r.Attempt != 1 {
		return
	}
	cur := hs.Status[r.Host]
	if cur.Final() {
		return
	}
	switch r.Kind {
	case schemas.ReportStarted:
		if cur == schemas.HostRunning {
			return
		}
		row := t.set(r.Step, r.Host, schemas.HostRunning)
		row.AgentID, row.StartedAt = r.AgentID, r.StartedAt
		t.emit(events.HostStarted, t.jobID(), r.ExecID, row.HostResult)
	case schemas.ReportFinished:
		if !r.Status.Final() {
			return
		}
		row := t.set(r.Step, r.Host, r.Status)
		row.AgentID, row.ExitCode, row.StartedAt, row.EndedAt = r.AgentID, r.ExitCode, r.StartedAt, r.EndedAt
		row.Lines, row.Error, row.Attempt = r.Lines, r.Error, r.Attempt
		t.results = append(t.results, row.HostResult)
		t.emit(events.HostFinished, t.jobID(), r.ExecID, row.HostResult)
	}
}

// stop moves the job to stopping: hosts that have not started end as
// stopped at once, running ones are killed and wait for their agent's word.
func (t *txn) stop(by, reason string) {
	if schemas.JobFinal(t.st.Status) || t.st.Status == schemas.JobStopping {
		return
	}
	t.st.Status, t.st.StopAt, t.st.StopBy = schemas.JobStopping, t.now, by
	if reason != "" {
		t.st.Reason = reason
	}
	t.changed, t.stopped = true, true
	t.emit(events.JobStopping, t.jobID(), t.jobID(), map[string]any{"id": t.st.ID, "by": by})
}

// advance runs deadlines, dispatch and step/job transitions until nothing
// more can happen now.
func (t *txn) advance() {
	st := t.st
	if schemas.JobFinal(st.Status) {
		return
	}
	if st.Status == schemas.JobWaiting {
		st.Status, st.StartedAt, t.changed = schemas.JobRunning, t.now, true
		t.emit(events.JobStarted, t.jobID(), t.jobID(), map[string]any{"id": st.ID})
	}
	for {
		ss := &st.Steps[st.Step]
		if ss.Status == schemas.JobWaiting {
			ss.Status, ss.StartedAt, t.changed = schemas.JobRunning, t.now, true
			t.emit(events.StepStarted, t.jobID(), fmt.Sprintf("%d.%d", st.ID, st.Step), map[string]any{"id": st.ID, "step": st.Step})
		}
		t.expire(st.Step)
		if st.Status == schemas.JobStopping {
			t.stopHosts(st.Step)
		} else {
			t.dispatch(st.Step)
		}
		if !allFinal(ss.Hosts) {
			return
		}
		ss.Status, ss.EndedAt, t.changed = outcome(ss.Hosts, st.Status == schemas.JobStopping), t.now, true
		t.emit(events.StepFinished, t.jobID(), fmt.Sprintf("%d.%d", st.ID, st.Step), map[string]any{"id": st.ID, "step": st.Step, "status": ss.Status})
		if ss.Status == schemas.JobSuccess && st.Status != schemas.JobStopping && st.Step+1 < len(st.Steps) {
			st.Step++
			continue
		}
		st.Status = ss.Status
		st.EndedAt, t.finished = t.now, true
		t.emit(events.JobFinished, t.jobID(), t.jobID(), map[string]any{"id": st.ID, "status": st.Status})
		return
	}
}

func allFinal(hs schemas.HostTable) bool {
	for _, s := range hs.Status {
		if !s.Final() {
			return false
		}
	}
	return true
}

// outcome is a finished step's status: success when every host succeeded,
// partial when some did, failed when none did, stopped after a stop.
func outcome(hs schemas.HostTable, stopping bool) string {
	ok := 0
	for _, s := range hs.Status {
		if s == schemas.HostSuccess {
			ok++
		}
	}
	switch {
	case stopping:
		return schemas.JobStopped
	case ok == len(hs.Status):
		return schemas.JobSuccess
	case ok > 0:
		return schemas.JobPartial
	}
	return schemas.JobFailed
}

// expire ends hosts whose deadlines passed.
func (t *txn) expire(step int) {
	spec := t.spec.Steps[step]
	hs := t.st.Steps[step].Hosts
	wait := time.Duration(t.spec.AgentWait) * time.Second
	for i, s := range hs.Status {
		if s.Final() {
			continue
		}
		since := t.st.At(hs.Since[i])
		age := t.now.Sub(since)
		switch {
		case t.st.Status == schemas.JobStopping && t.now.Sub(t.st.StopAt) > stopGrace:
			t.finalize(step, i, schemas.HostStopped, "no terminate acknowledgement from the agent")
		case s == schemas.HostWaitingAgent && age > wait:
			t.finalize(step, i, schemas.HostAgentOffline, fmt.Sprintf("no online agent served the host within %s", wait))
		case s == schemas.HostDispatched && age > wait+startSlack+reportLag:
			t.finalize(step, i, schemas.HostAgentOffline, "the agent did not start the task in time")
		case s == schemas.HostRunning:
			if _, ok := t.dir.Lookup(spec.Targets[i], t.now); !ok {
				t.finalize(step, i, schemas.HostInterrupted, "the agent went offline while the task ran")
			} else if age > spec.StepTimeout()+runSlack {
				t.finalize(step, i, schemas.HostTimeout, "no result from the agent within the timeout")
			}
		}
	}
}

// stopHosts ends hosts of a stopping job that have not started, and asks
// agents to kill or cancel what they hold.
func (t *txn) stopHosts(step int) {
	hs := t.st.Steps[step].Hosts
	for i, s := range hs.Status {
		switch s {
		case schemas.HostPending, schemas.HostWaitingAgent:
			t.finalize(step, i, schemas.HostStopped, "stopped before it was dispatched")
		case schemas.HostDispatched, schemas.HostRunning:
			if a, ok := t.dir.Lookup(t.target(step, i), t.now); ok {
				if t.kills == nil {
					t.kills = map[string][]string{}
				}
				t.kills[a.ID] = append(t.kills[a.ID], schemas.ExecID(t.st.ID, step, i, 1))
			}
			if s == schemas.HostDispatched {
				t.finalize(step, i, schemas.HostStopped, "stopped before it started")
			}
		}
	}
}

// dispatch sends tasks to hosts with an online agent, up to the step's
// concurrency; hosts without one wait (bounded by the job's agent wait).
func (t *txn) dispatch(step int) {
	spec := t.spec.Steps[step]
	hs := t.st.Steps[step].Hosts
	limit := spec.Concurrency
	if limit <= 0 {
		limit = len(hs.Status)
	}
	inflight := 0
	for _, s := range hs.Status {
		if s == schemas.HostDispatched || s == schemas.HostRunning {
			inflight++
		}
	}
	for i, s := range hs.Status {
		if inflight >= limit {
			return
		}
		if s != schemas.HostPending && s != schemas.HostWaitingAgent {
			continue
		}
		a, ok := t.dir.Lookup(spec.Targets[i], t.now)
		if !ok {
			if s == schemas.HostPending {
				t.set(step, i, schemas.HostWaitingAgent)
			}
			continue
		}
		row := t.set(step, i, schemas.HostDispatched)
		row.AgentID = a.ID
		t.tasks = append(t.tasks, routedTask{agent: a.ID, task: t.task(step, i, t.now)})
		inflight++
	}
}

// resend rebuilds the tasks of every dispatched host; after a crash between
// commit and publish they were never sent. Duplicates are dropped by the
// task stream's dedupe window and by the agents' journals.
func (t *txn) resend() {
	step := t.st.Step
	hs := t.st.Steps[step].Hosts
	for i, s := range hs.Status {
		if s != schemas.HostDispatched {
			continue
		}
		if a, ok := t.dir.Lookup(t.target(step, i), t.now); ok {
			t.tasks = append(t.tasks, routedTask{agent: a.ID, task: t.task(step, i, t.st.At(hs.Since[i]))})
		}
	}
}

func (t *txn) task(step, host int, dispatchedAt time.Time) schemas.Task {
	spec := t.spec.Steps[step]
	return schemas.Task{
		V: schemas.MessageVersion, ExecID: schemas.ExecID(t.st.ID, step, host, 1),
		JobID: t.st.ID, Step: step, Host: host, Attempt: 1,
		Target: spec.Targets[host], Kind: spec.Type, Script: spec.Script,
		Timeout:       spec.Timeout,
		NotAfter:      dispatchedAt.Add(time.Duration(t.spec.AgentWait)*time.Second + startSlack),
		CorrelationID: t.spec.CorrelationID,
	}
}

// rows returns the cache rows of every host this txn changed.
func (t *txn) rows() []statuscache.HostRow {
	out := make([]statuscache.HostRow, 0, len(t.touched))
	for _, r := range t.touched {
		out = append(out, *r)
	}
	return out
}
