package orchestrator

import (
	"fmt"
	"strconv"
	"time"

	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/schemas"
)

// Deadline slack around agents and stops.
const (
	startSlack = 30 * time.Second // NotAfter = dispatch + agent wait + startSlack
	reportLag  = 15 * time.Second // time for a report to travel back
	stopGrace  = 15 * time.Second // running hosts of a stopped job wait this long for the agent's word
	runSlack   = 60 * time.Second // a running host with no result past timeout + runSlack ends as timeout
)

// Directory answers which online agent serves a host, and whether the
// agents of a host are gone (silent past their TTL while the directory
// could hear them: not merely unseen during a NATS failover).
type Directory interface {
	Lookup(h schemas.Host, now time.Time) (schemas.AgentInfo, bool)
	Gone(h schemas.Host, now time.Time) bool
}

// routedTask is a task and the agent (and task pool) it goes to.
type routedTask struct {
	pool, agent string
	task        schemas.Task
}

// agentRef names an agent on its control subject.
type agentRef struct{ pool, id string }

// unit is one thing a step runs on: a target host, or (phase upload) one
// of a file step's upload units on a source host.
type unit struct {
	step, idx int
	phase     string
}

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
	touched  map[unit]*schemas.HostRow
	events   []events.Event
	kills    map[agentRef][]string // agent → exec ids
	finished bool
	reopened bool // an operation brought a finished job back
	created  bool // the state is new: nothing of the job is cached yet
}

func newTxn(spec *schemas.JobSpec, st *schemas.JobState, now time.Time, dir Directory) *txn {
	return &txn{spec: spec, st: st, now: now, dir: dir, touched: map[unit]*schemas.HostRow{}}
}

func (t *txn) jobID() string { return strconv.FormatInt(t.st.ID, 10) }

func (t *txn) emit(kind, subject, id string, data any) {
	t.events = append(t.events, events.Event{Kind: kind, Subject: subject, ID: id, Time: t.now, Data: data})
}

func (t *txn) target(step, host int) schemas.Host { return t.spec.Steps[step].Targets[host] }

// table is the status table of a step's targets or of its upload units.
func (t *txn) table(step int, phase string) *schemas.HostTable {
	if phase == schemas.PhaseUpload {
		return &t.st.Steps[step].Uploads
	}
	return &t.st.Steps[step].Hosts
}

// host is the machine a unit runs on.
func (t *txn) host(u unit) schemas.Host {
	if u.phase == schemas.PhaseUpload {
		return t.spec.Steps[u.step].File.UploadUnits()[u.idx].Host
	}
	return t.target(u.step, u.idx)
}

func (t *txn) execID(u unit) string {
	return schemas.UnitExecID(t.st.ID, u.step, u.phase, u.idx, t.table(u.step, u.phase).AttemptOf(u.idx))
}

// row returns the cache row of a unit, creating it from the table.
func (t *txn) row(u unit) *schemas.HostRow {
	if r, ok := t.touched[u]; ok {
		return r
	}
	r := &schemas.HostRow{}
	r.Step, r.Index, r.Phase, r.Host = u.step, u.idx, u.phase, t.host(u)
	r.Attempt = t.table(u.step, u.phase).AttemptOf(u.idx)
	t.touched[u] = r
	return r
}

// set moves a unit to a new status and records the change.
func (t *txn) set(u unit, s schemas.HostStatus) *schemas.HostRow {
	t.table(u.step, u.phase).Set(u.idx, s, t.st.Sec(t.now))
	t.changed = true
	r := t.row(u)
	r.Status, r.Since = s, t.now
	return r
}

// finalize ends a unit with a final status decided here (not by an agent).
func (t *txn) finalize(u unit, s schemas.HostStatus, reason string) {
	tab := t.table(u.step, u.phase)
	was, since := tab.Status[u.idx], t.st.At(tab.Since[u.idx])
	r := t.set(u, s)
	r.EndedAt, r.Error = t.now, reason
	if was == schemas.HostRunning {
		r.StartedAt = since
	}
	t.results = append(t.results, r.HostResult)
	t.emit(events.HostFinished, t.jobID(), t.execID(u)+".w", r.HostResult)
}

// apply folds one report into the state. Reports about hosts that are
// already final, or about an earlier attempt, are ignored: each host's
// result is recorded exactly once per attempt.
func (t *txn) apply(r schemas.Report) {
	if r.Kind == schemas.ReportKick || r.Step < 0 || r.Step >= len(t.st.Steps) {
		return
	}
	u := unit{step: r.Step, idx: r.Host, phase: r.Phase}
	tab := t.table(r.Step, r.Phase)
	if r.Host < 0 || r.Host >= len(tab.Status) || r.Attempt != tab.AttemptOf(r.Host) {
		return
	}
	cur := tab.Status[r.Host]
	if cur.Final() {
		return
	}
	switch r.Kind {
	case schemas.ReportStarted:
		if cur == schemas.HostRunning {
			return
		}
		row := t.set(u, schemas.HostRunning)
		row.AgentID, row.StartedAt = r.AgentID, r.StartedAt
		t.emit(events.HostStarted, t.jobID(), r.ExecID, row.HostResult)
	case schemas.ReportFinished:
		if !r.Status.Final() {
			return
		}
		row := t.set(u, r.Status)
		row.AgentID, row.ExitCode, row.StartedAt, row.EndedAt = r.AgentID, r.ExitCode, r.StartedAt, r.EndedAt
		row.Lines, row.Error, row.Attempt = r.Lines, r.Error, r.Attempt
		t.results = append(t.results, row.HostResult)
		t.emit(events.HostFinished, t.jobID(), r.ExecID, row.HostResult)
		if r.Phase == schemas.PhaseUpload && r.Status == schemas.HostSuccess {
			t.addFiles(r.Step, r.Files)
		}
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

// stepOver reports whether a step status is final.
func stepOver(s string) bool {
	switch s {
	case schemas.JobSuccess, schemas.JobFailed, schemas.JobPartial, schemas.JobStopped, schemas.StepIgnored, schemas.StepSkipped:
		return true
	}
	return false
}

// stepPassed reports whether a finished step lets the job go on.
func stepPassed(s string) bool {
	return s == schemas.JobSuccess || s == schemas.StepIgnored || s == schemas.StepSkipped
}

// advance runs deadlines, dispatch, rolling batches and step/job
// transitions until nothing more can happen now.
func (t *txn) advance() {
	st := t.st
	if schemas.JobFinal(st.Status) {
		return
	}
	if st.Status == schemas.JobWaiting {
		st.Status, st.StartedAt, t.changed = schemas.JobRunning, t.now, true
		t.emitJobStarted()
	}
	for {
		ss := &st.Steps[st.Step]
		if ss.Status == schemas.JobWaiting {
			t.startStep(st.Step)
		}
		if !stepOver(ss.Status) && !t.runStep(st.Step) {
			return // the step goes on, or waits for a person
		}
		if stepPassed(ss.Status) && st.Status != schemas.JobStopping && st.Step+1 < len(st.Steps) {
			st.Step++
			continue
		}
		t.finish()
		return
	}
}

func (t *txn) startStep(step int) {
	ss := &t.st.Steps[step]
	spec := t.spec.Steps[step]
	ss.Status, ss.StartedAt, ss.EndedAt, t.changed = schemas.JobRunning, t.now, time.Time{}, true
	ss.Batch, ss.Batches, ss.Hold, ss.Aborted = 0, nil, "", false
	if spec.Rolling != nil {
		// validated at submit; an error here leaves one batch
		ss.Batches, _ = schemas.RollingBatches(spec.Rolling.Expr, len(ss.Hosts.Status))
	}
	if spec.File != nil {
		t.startFiles(step)
	}
	t.emitStepStarted(step)
}

// runStep drives a running step; it reports true once the step has ended.
func (t *txn) runStep(step int) bool {
	st := t.st
	ss := &st.Steps[step]
	spec := t.spec.Steps[step]
	for {
		t.expire(step)
		if st.Status == schemas.JobStopping {
			ss.Hold = ""
			t.stopHosts(step)
		} else if ss.Hold == "" {
			t.dispatch(step)
		}
		if ss.Phase == schemas.PhaseUpload {
			if !allFinal(ss.Uploads, len(ss.Uploads.Status)) {
				return false
			}
			t.finishUploads(step)
			continue
		}
		t.checkMaxFail(step)
		if ss.Hold != "" && st.Status != schemas.JobStopping {
			if st.Status != schemas.JobWaitingUser {
				st.Status, t.changed = schemas.JobWaitingUser, true
			}
			return false
		}
		if st.Status == schemas.JobWaitingUser {
			st.Status, t.changed = schemas.JobRunning, true
		}
		end := ss.BatchEnd()
		if !allFinal(ss.Hosts, end) {
			return false
		}
		if end < len(ss.Hosts.Status) && st.Status != schemas.JobStopping && !ss.Aborted {
			begin := 0
			if ss.Batch > 0 {
				begin = ss.Batches[ss.Batch-1]
			}
			failed := !allSucceeded(ss.Hosts, begin, end)
			switch {
			case failed && spec.Rolling.Mode != schemas.RollingIgnoreFailure:
				t.hold(step, schemas.HoldFailure)
				continue
			case spec.Rolling.Mode == schemas.RollingConfirmEach:
				t.hold(step, schemas.HoldConfirm)
				continue
			}
			ss.Batch++
			t.changed = true
			continue
		}
		ss.Status, ss.EndedAt, t.changed = t.outcome(step), t.now, true
		t.emitStepFinished(step)
		return true
	}
}

func (t *txn) hold(step int, why string) {
	ss := &t.st.Steps[step]
	ss.Hold, t.changed = why, true
	t.emitStepWaiting(step)
}

// checkMaxFail gives up on a step's remaining hosts once more than its
// maximum failure percentage of hosts has failed.
func (t *txn) checkMaxFail(step int) {
	ss := &t.st.Steps[step]
	limit := t.spec.Steps[step].MaxFailPercent
	if limit <= 0 || ss.Aborted {
		return
	}
	failed := 0
	for _, s := range ss.Hosts.Status {
		if s.Final() && s != schemas.HostSuccess && s != schemas.HostSkipped {
			failed++
		}
	}
	if failed*100 <= limit*len(ss.Hosts.Status) {
		return
	}
	ss.Aborted, ss.Hold, t.changed = true, "", true
	if len(ss.Batches) > 0 {
		ss.Batch = len(ss.Batches) - 1
	}
	reason := fmt.Sprintf("more than %d%% of the step's hosts failed", limit)
	for i, s := range ss.Hosts.Status {
		if s == schemas.HostPending || s == schemas.HostWaitingAgent {
			t.finalize(unit{step: step, idx: i}, schemas.HostSkipped, reason)
		}
	}
	if t.st.Reason == "" {
		t.st.Reason = fmt.Sprintf("step %d: %s", step+1, reason)
	}
}

// finish ends the job: stopped after a stop, otherwise as the step that
// ended it (success when every step passed).
func (t *txn) finish() {
	st := t.st
	last := st.Steps[st.Step].Status
	switch {
	case st.Status == schemas.JobStopping:
		st.Status = schemas.JobStopped
	case stepPassed(last):
		st.Status = schemas.JobSuccess
	default:
		st.Status = last
	}
	st.EndedAt, t.finished, t.changed = t.now, true, true
	t.emitFinished()
}

// The emit* functions build each event from the record alone (its id and
// its data), so that replayEvents can publish the same events again.

func (t *txn) emitJobStarted() {
	t.emit(events.JobStarted, t.jobID(), t.jobID(), map[string]any{"id": t.st.ID})
}

func (t *txn) emitStepStarted(step int) {
	t.emit(events.StepStarted, t.jobID(), fmt.Sprintf("%d.%d", t.st.ID, step), map[string]any{"id": t.st.ID, "step": step})
}

func (t *txn) emitStepFinished(step int) {
	t.emit(events.StepFinished, t.jobID(), fmt.Sprintf("%d.%d", t.st.ID, step),
		map[string]any{"id": t.st.ID, "step": step, "status": t.st.Steps[step].Status})
}

func (t *txn) emitStepWaiting(step int) {
	ss := &t.st.Steps[step]
	t.emit(events.StepWaiting, t.jobID(), fmt.Sprintf("%d.%d.%d", t.st.ID, step, ss.Batch), map[string]any{
		"id": t.st.ID, "step": step, "batch": ss.Batch + 1, "hold": ss.Hold})
}

// replayEvents emits again every event the record says has happened (but
// host.started, which is transient, job.stopping and operator decisions). A worker that
// died between its commit and its effects leaves them unpublished; whoever
// handles the redelivered message publishes them, and the EVENTS stream
// drops those that did go out (same ids, within its 2-minute window).
func (t *txn) replayEvents() {
	st := t.st
	t.emit(events.JobCreated, t.jobID(), t.jobID(), schemas.Summarize(t.spec, st))
	if st.Status == schemas.JobWaiting {
		return
	}
	t.emitJobStarted()
	for step := 0; step <= st.Step && step < len(st.Steps); step++ {
		ss := st.Steps[step]
		if ss.Status == schemas.JobWaiting {
			continue
		}
		t.emitStepStarted(step)
		if ss.Hold != "" {
			t.emitStepWaiting(step)
		}
		if stepOver(ss.Status) {
			t.emitStepFinished(step)
		}
	}
	if schemas.JobFinal(st.Status) {
		t.emitFinished()
	}
}

// emitFinished emits job.finished; its id follows from the record, so a
// replay of the same finish publishes the same event.
func (t *txn) emitFinished() {
	st := t.st
	// callback tells the callback sender whether there is anything to call
	data := map[string]any{"id": st.ID, "status": st.Status, "callback": t.spec.CallbackURL != ""}
	if st.Reason != "" {
		data["reason"] = st.Reason
	}
	t.emit(events.JobFinished, t.jobID(), fmt.Sprintf("%d.%d", st.ID, st.EndedAt.UnixNano()), data)
}

// recorded picks the finished reports whose host is already final at the
// report's attempt: the state has them; their effects may be missing.
func (t *txn) recorded(reports []schemas.Report) []schemas.Report {
	var out []schemas.Report
	for _, r := range reports {
		if r.Kind != schemas.ReportFinished || r.Step < 0 || r.Step >= len(t.st.Steps) {
			continue
		}
		tab := t.table(r.Step, r.Phase)
		if r.Host >= 0 && r.Host < len(tab.Status) && tab.Status[r.Host].Final() && r.Attempt == tab.AttemptOf(r.Host) {
			out = append(out, r)
		}
	}
	return out
}

// replayResult puts a recorded host result back in the cache rows and
// emits its host.finished event again (same id as the first time).
func (t *txn) replayResult(exec string, hr schemas.HostResult) {
	u := unit{step: hr.Step, idx: hr.Index, phase: hr.Phase}
	r := t.row(u)
	r.HostResult, r.Since = hr, hr.EndedAt
	t.emit(events.HostFinished, t.jobID(), exec, hr)
}

func allFinal(hs schemas.HostTable, end int) bool {
	for _, s := range hs.Status[:end] {
		if !s.Final() {
			return false
		}
	}
	return true
}

func allSucceeded(hs schemas.HostTable, begin, end int) bool {
	for _, s := range hs.Status[begin:end] {
		if s != schemas.HostSuccess && s != schemas.HostSkipped {
			return false
		}
	}
	return true
}

// outcome is a finished step's status: success when every host succeeded,
// partial when some did, failed when none did (or the step gave up),
// stopped after a stop; a step that may fail is error-ignored instead.
func (t *txn) outcome(step int) string {
	hs := t.st.Steps[step].Hosts
	ok, skipped := 0, 0
	for _, s := range hs.Status {
		switch s {
		case schemas.HostSuccess:
			ok++
		case schemas.HostSkipped:
			skipped++
		}
	}
	var out string
	switch {
	case t.st.Status == schemas.JobStopping:
		return schemas.JobStopped
	case t.st.Steps[step].Aborted:
		out = schemas.JobFailed
	case ok+skipped == len(hs.Status):
		return schemas.JobSuccess
	case ok > 0:
		out = schemas.JobPartial
	default:
		out = schemas.JobFailed
	}
	if t.spec.Steps[step].OnFailure == schemas.OnFailureContinue {
		return schemas.StepIgnored
	}
	return out
}

// phases lists the unit tables a step has now: a file step in its upload
// phase also has its upload units.
func (t *txn) phases(step int) []string {
	if t.st.Steps[step].Phase == schemas.PhaseUpload {
		return []string{schemas.PhaseUpload, ""}
	}
	return []string{""}
}

// expire ends units whose deadlines passed.
func (t *txn) expire(step int) {
	for _, phase := range t.phases(step) {
		t.expireTable(step, phase)
	}
}

func (t *txn) expireTable(step int, phase string) {
	spec := t.spec.Steps[step]
	tab := t.table(step, phase)
	wait := time.Duration(t.spec.AgentWait) * time.Second
	for i, s := range tab.Status {
		if s.Final() {
			continue
		}
		u := unit{step: step, idx: i, phase: phase}
		age := t.now.Sub(t.st.At(tab.Since[i]))
		switch {
		case t.st.Status == schemas.JobStopping && t.now.Sub(t.st.StopAt) > stopGrace:
			t.finalize(u, schemas.HostStopped, schemas.ReasonNoTerminateAck)
		case s == schemas.HostWaitingAgent && age > wait:
			t.finalize(u, schemas.HostAgentOffline, fmt.Sprintf("no online agent served the host within %s", wait))
		case s == schemas.HostDispatched && age > wait+startSlack+reportLag:
			t.finalize(u, schemas.HostAgentOffline, "the agent did not start the task in time")
		case s == schemas.HostRunning:
			if t.dir.Gone(t.host(u), t.now) {
				t.finalize(u, schemas.HostInterrupted, "the agent went offline while the task ran")
			} else if age > spec.StepTimeout()+runSlack {
				t.finalize(u, schemas.HostTimeout, "no result from the agent within the timeout")
			}
		}
	}
}

// stopHosts ends units of a stopping job that have not started, and asks
// agents to kill or cancel what they hold.
func (t *txn) stopHosts(step int) {
	for _, phase := range t.phases(step) {
		tab := t.table(step, phase)
		for i, s := range tab.Status {
			u := unit{step: step, idx: i, phase: phase}
			switch s {
			case schemas.HostPending, schemas.HostWaitingAgent:
				t.finalize(u, schemas.HostStopped, "stopped before it was dispatched")
			case schemas.HostDispatched, schemas.HostRunning:
				if a, ok := t.dir.Lookup(t.host(u), t.now); ok {
					if t.kills == nil {
						t.kills = map[agentRef][]string{}
					}
					ref := agentRef{a.TaskPool(), a.ID}
					t.kills[ref] = append(t.kills[ref], t.execID(u))
				}
				if s == schemas.HostDispatched {
					t.finalize(u, schemas.HostStopped, "stopped before it started")
				}
			}
		}
	}
}

// dispatch sends tasks to units that may run now and have an online agent:
// a file step's upload units all at once, targets of the current batch up
// to the step's concurrency. Units without an agent wait (bounded by the
// job's agent wait).
func (t *txn) dispatch(step int) {
	ss := &t.st.Steps[step]
	if ss.Phase == schemas.PhaseUpload {
		t.dispatchTable(step, schemas.PhaseUpload, len(ss.Uploads.Status), len(ss.Uploads.Status))
		return
	}
	limit := t.spec.Steps[step].Concurrency
	if limit <= 0 {
		limit = len(ss.Hosts.Status)
	}
	t.dispatchTable(step, "", ss.BatchEnd(), limit)
}

func (t *txn) dispatchTable(step int, phase string, end, limit int) {
	tab := t.table(step, phase)
	inflight := 0
	for _, s := range tab.Status {
		if s == schemas.HostDispatched || s == schemas.HostRunning {
			inflight++
		}
	}
	for i, s := range tab.Status[:end] {
		if inflight >= limit {
			return
		}
		if s != schemas.HostPending && s != schemas.HostWaitingAgent {
			continue
		}
		u := unit{step: step, idx: i, phase: phase}
		a, ok := t.dir.Lookup(t.host(u), t.now)
		if !ok {
			if s == schemas.HostPending {
				t.set(u, schemas.HostWaitingAgent)
			}
			continue
		}
		row := t.set(u, schemas.HostDispatched)
		row.AgentID = a.ID
		t.tasks = append(t.tasks, routedTask{pool: a.TaskPool(), agent: a.ID, task: t.task(u, t.now)})
		inflight++
	}
}

// resend rebuilds the tasks of every dispatched unit; after a crash between
// commit and publish they were never sent. Duplicates are dropped by the
// task stream's dedupe window and by the agents' journals.
func (t *txn) resend() {
	step := t.st.Step
	for _, phase := range t.phases(step) {
		tab := t.table(step, phase)
		for i, s := range tab.Status {
			if s != schemas.HostDispatched {
				continue
			}
			u := unit{step: step, idx: i, phase: phase}
			if a, ok := t.dir.Lookup(t.host(u), t.now); ok {
				t.tasks = append(t.tasks, routedTask{pool: a.TaskPool(), agent: a.ID, task: t.task(u, t.st.At(tab.Since[i]))})
			}
		}
	}
}

func (t *txn) task(u unit, dispatchedAt time.Time) schemas.Task {
	spec := t.spec.Steps[u.step]
	attempt := t.table(u.step, u.phase).AttemptOf(u.idx)
	tk := schemas.Task{
		V: schemas.MessageVersion, ExecID: t.execID(u),
		JobID: t.st.ID, Step: u.step, Host: u.idx, Attempt: attempt, Phase: u.phase,
		Target: t.host(u), Kind: spec.Type, Script: spec.Script,
		Timeout:       spec.Timeout,
		NotAfter:      dispatchedAt.Add(time.Duration(t.spec.AgentWait)*time.Second + startSlack),
		CorrelationID: t.spec.CorrelationID,
	}
	if f := spec.File; f != nil {
		if u.phase == schemas.PhaseUpload {
			src := f.Sources[f.UploadUnits()[u.idx].Source]
			tk.Kind = schemas.TaskUpload
			tk.Upload = &schemas.UploadTask{
				Paths: src.Paths, Account: src.Account, LimitMB: f.UploadLimitMB, Strict: f.IsStrict(),
				Prefix: fmt.Sprintf("job/%d/%d/u%d", t.st.ID, u.step, u.idx),
			}
		} else {
			tk.Kind = schemas.TaskDownload
			tk.Download = &schemas.DownloadTask{
				Files: t.st.Steps[u.step].Manifest, Destination: f.Destination, MustExist: f.DestMustExist,
				Mode: f.Mode, Owner: f.Owner, LimitMB: f.DownloadLimitMB,
			}
		}
	}
	return tk
}

// rows returns the cache rows of every target host this txn changed
// (upload units are kept in KV and the logs, not among the hosts).
func (t *txn) rows() []schemas.HostRow {
	out := make([]schemas.HostRow, 0, len(t.touched))
	for u, r := range t.touched {
		if u.phase == "" {
			out = append(out, *r)
		}
	}
	return out
}

// op applies an operator's decision to the job's current step. It checks
// again what it may do: the API checked against a cached state that may
// have moved on since.
func (t *txn) op(cmd schemas.OpCommand) error {
	if err := t.st.CheckOp(cmd.Op, cmd.Step); err != nil {
		return err
	}
	st := t.st
	ss := &st.Steps[st.Step]
	switch cmd.Op {
	case schemas.OpConfirm:
		ss.Hold = ""
		ss.Batch++
	case schemas.OpSkip, schemas.OpIgnoreError:
		for i, s := range ss.Hosts.Status {
			if !s.Final() {
				t.finalize(unit{step: st.Step, idx: i}, schemas.HostSkipped, "skipped by "+cmd.By)
			}
		}
		ss.Hold, ss.EndedAt = "", t.now
		ss.Status = schemas.StepSkipped
		if cmd.Op == schemas.OpIgnoreError {
			ss.Status = schemas.StepIgnored
		}
	case schemas.OpRetryFailed, schemas.OpRetryAll:
		for i, s := range ss.Hosts.Status {
			if cmd.Op == schemas.OpRetryAll || (s.Final() && s != schemas.HostSuccess) {
				ss.Hosts.Retry(i, st.Sec(t.now))
				r := t.row(unit{step: st.Step, idx: i})
				r.HostResult = schemas.HostResult{Step: st.Step, Index: i, Host: t.target(st.Step, i), Status: schemas.HostPending, Attempt: ss.Hosts.AttemptOf(i)}
				r.Since = t.now
			}
		}
		t.retryUploads(st.Step, cmd.Op == schemas.OpRetryAll)
		ss.Hold, ss.Aborted, ss.Status, ss.EndedAt = "", false, schemas.JobRunning, time.Time{}
	default:
		return fmt.Errorf("unknown operation %q: %w", cmd.Op, schemas.ErrInvalid)
	}
	if schemas.JobFinal(st.Status) {
		t.reopened = true
		st.EndedAt = time.Time{}
	}
	st.Status, t.changed = schemas.JobRunning, true
	t.emit(events.StepOperated, t.jobID(), fmt.Sprintf("%d.%d.%s.%d", st.ID, st.Step, cmd.Op, t.now.UnixNano()),
		map[string]any{"id": st.ID, "step": st.Step, "op": cmd.Op, "by": cmd.By})
	return nil
}

// abort ends the job as failed with a reason: every unit that has not
// ended fails with it.
func (t *txn) abort(reason string) {
	st := t.st
	for step := range st.Steps {
		for _, phase := range []string{schemas.PhaseUpload, ""} {
			for i, s := range t.table(step, phase).Status {
				if !s.Final() && (phase == "" || t.spec.Steps[step].File != nil) {
					t.finalize(unit{step: step, idx: i, phase: phase}, schemas.HostFailed, reason)
				}
			}
		}
		if !stepOver(st.Steps[step].Status) {
			st.Steps[step].Status, st.Steps[step].EndedAt = schemas.JobFailed, t.now
		}
	}
	st.Status, st.Reason, st.EndedAt = schemas.JobFailed, reason, t.now
	t.finished, t.changed = true, true
	t.emitFinished()
}
