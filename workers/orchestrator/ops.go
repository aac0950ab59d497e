package orchestrator

// This file holds what people do to a job: stop it, operate on its current
// step (confirm, skip, ignore an error, retry), and abort it when its
// command failed for good.

import (
	"fmt"
	"time"

	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/internal/jobstate"
	"github.com/fleetjob/fleetjob/schemas"
)

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

// op applies an operator's decision to the job's current step. It checks
// again what it may do: the API checked against a cached state that may
// have moved on since.
func (t *txn) op(cmd schemas.OpCommand) error {
	if err := jobstate.CheckOp(t.st, cmd.Op, cmd.Step); err != nil {
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
			if cmd.Op == schemas.OpRetryAll || jobstate.Retried(s) {
				// the state keeps a unit's latest attempt only: an
				// inline log of the one retried is kept apart
				if hr, ok := st.Result(st.Step, "", i); ok && hr.Log != nil && hr.Attempt == ss.Hosts.AttemptOf(i) {
					t.superseded = append(t.superseded, hr)
				}
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
		t.reopen()
	}
	st.Status, t.changed = schemas.JobRunning, true
	t.emit(events.StepOperated, t.jobID(), fmt.Sprintf("%d.%d.%s.%d", st.ID, st.Step, cmd.Op, t.now.UnixNano()),
		map[string]any{"id": st.ID, "step": st.Step, "op": cmd.Op, "by": cmd.By})
	return nil
}

// abort ends the job as failed with a reason: every unit of a step it
// reached that has not ended fails with it; the steps it never reached end
// skipped (see end).
func (t *txn) abort(reason string) {
	st := t.st
	for step := range st.Steps {
		if jobstate.Unreached(&st.Steps[step]) {
			continue
		}
		for _, phase := range []string{schemas.PhaseUpload, ""} {
			for i, s := range t.table(step, phase).Status {
				if !s.Final() && (phase == "" || t.spec.Steps[step].File != nil) {
					t.finalize(unit{step: step, idx: i, phase: phase}, schemas.HostFailed, reason)
				}
			}
		}
		if !jobstate.StepOver(st.Steps[step].Status) {
			st.Steps[step].Status, st.Steps[step].EndedAt = schemas.JobFailed, t.now
		}
	}
	st.Reason = reason
	t.end(schemas.JobFailed)
}
