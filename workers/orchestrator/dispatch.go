package orchestrator

// This file holds dispatch: which units may run now and which agent gets
// each one's task, the tasks themselves, and resending the tasks of
// dispatched units after a crash.

import (
	"time"

	"github.com/fleetjob/fleetjob/internal/jobstate"
	"github.com/fleetjob/fleetjob/schemas"
)

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
		if !jobstate.Undispatched(s) {
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
		t.tasks = append(t.tasks, routedTask{pool: a.TaskPool(), agent: a.ID, task: t.task(u, a.ID, t.now)})
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
				t.tasks = append(t.tasks, routedTask{pool: a.TaskPool(), agent: a.ID, task: t.task(u, a.ID, t.st.At(tab.Since[i]))})
			}
		}
	}
}

// task builds the task of unit u for agent. A script's sealed values go
// with that agent's own data key only.
func (t *txn) task(u unit, agent string, dispatchedAt time.Time) schemas.Task {
	spec := t.spec.Steps[u.step]
	attempt := t.table(u.step, u.phase).AttemptOf(u.idx)
	inline := t.spec.InlineLogLimit(u.step)
	tk := schemas.Task{
		V: schemas.MessageVersion, ExecID: t.execID(u),
		JobID: t.st.ID, Step: u.step, Host: u.idx, Attempt: attempt, Phase: u.phase,
		Target: t.host(u), Kind: spec.Type, Script: spec.Script.ForAgent(agent),
		Timeout:       spec.Timeout,
		NotAfter:      dispatchedAt.Add(time.Duration(t.spec.AgentWait)*time.Second + startSlack),
		CorrelationID: t.spec.CorrelationID,
		// a small output rides in the result and stays with it: in a
		// small job's state, in a larger job's segment (see apply)
		InlineLog: inline > 0,
	}
	if inline > 0 && inline < schemas.MaxInlineLog {
		tk.InlineMax = inline
	}
	if f := spec.File; f != nil {
		if u.phase == schemas.PhaseUpload {
			src := f.Sources[f.UploadUnits()[u.idx].Source]
			tk.Kind = schemas.TaskUpload
			tk.Upload = &schemas.UploadTask{
				Paths: src.Paths, Account: src.Account, LimitMB: f.UploadLimitMB, Strict: f.IsStrict(),
				Prefix: schemas.UploadPrefix(t.st.ID, u.step, u.idx),
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
