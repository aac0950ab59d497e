package orchestrator

// This file holds how a job moves through its steps: starting a step,
// running it batch by batch (rolling holds, the maximum failure
// percentage), deciding its outcome, going on to the next step, and
// finishing the job.

import (
	"fmt"
	"time"

	"github.com/fleetjob/fleetjob/internal/jobstate"
	"github.com/fleetjob/fleetjob/schemas"
)

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
		if !jobstate.StepOver(ss.Status) && !t.runStep(st.Step) {
			return // the step goes on, or waits for a person
		}
		if jobstate.StepPassed(ss.Status) && st.Status != schemas.JobStopping && st.Step+1 < len(st.Steps) {
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
			if !jobstate.AllFinal(ss.Uploads, len(ss.Uploads.Status)) {
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
		if !jobstate.AllFinal(ss.Hosts, end) {
			return false
		}
		if end < len(ss.Hosts.Status) && st.Status != schemas.JobStopping && !ss.Aborted {
			if why := jobstate.BatchHold(spec.Rolling, ss); why != "" {
				t.hold(step, why)
				continue
			}
			ss.Batch++
			t.changed = true
			continue
		}
		ss.Status, ss.EndedAt, t.changed = jobstate.StepOutcome(t.spec, st, step), t.now, true
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
	if ss.Aborted || !jobstate.MaxFailExceeded(ss.Hosts, limit) {
		return
	}
	ss.Aborted, ss.Hold, t.changed = true, "", true
	if len(ss.Batches) > 0 {
		ss.Batch = len(ss.Batches) - 1
	}
	reason := fmt.Sprintf("more than %d%% of the step's hosts failed", limit)
	for i, s := range ss.Hosts.Status {
		if jobstate.Undispatched(s) {
			t.finalize(unit{step: step, idx: i}, schemas.HostSkipped, reason)
		}
	}
	if t.st.Reason == "" {
		t.st.Reason = fmt.Sprintf("step %d: %s", step, reason)
	}
}

// finish ends the job: stopped after a stop, otherwise as the step that
// ended it (success when every step passed).
func (t *txn) finish() {
	t.end(jobstate.JobOutcome(t.st))
}

// end ends the job with a final status. What the job never reached ends
// skipped, so a final job has no step left waiting and no unit left
// pending: every step that never started, with its hosts and upload
// units. They get no result and no event of their own (they never ran);
// their cache rows say skipped. What the ending interrupted in the current
// step ended already, by the rule of the ending (stopped by a stop,
// failed by an abort, skipped past the maximum failure percentage).
func (t *txn) end(status string) {
	st := t.st
	st.Status = status
	for step := range st.Steps {
		if !jobstate.Unreached(&st.Steps[step]) {
			continue
		}
		st.Steps[step].Status = schemas.StepSkipped
		t.setAll(step, schemas.HostSkipped)
	}
	st.EndedAt, t.finished, t.changed = t.now, true, true
	t.emitFinished()
}

// setAll moves every unit of a step (targets and upload units) that has
// not been dispatched, or was skipped, to status s, recording no result.
func (t *txn) setAll(step int, s schemas.HostStatus) {
	for _, phase := range []string{schemas.PhaseUpload, ""} {
		for i, cur := range t.table(step, phase).Status {
			if cur != s && (jobstate.Undispatched(cur) || cur == schemas.HostSkipped) {
				t.set(unit{step: step, idx: i, phase: phase}, s)
			}
		}
	}
}

// reopen brings a finished job back to running at its current step (an
// operation on it): the steps after it, which the job never reached and
// which its end skipped, wait again with their units pending.
func (t *txn) reopen() {
	st := t.st
	t.reopened = true
	st.EndedAt = time.Time{}
	for step := st.Step + 1; step < len(st.Steps); step++ {
		st.Steps[step].Status = schemas.JobWaiting
		t.setAll(step, schemas.HostPending)
	}
}
