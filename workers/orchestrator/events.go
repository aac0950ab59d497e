package orchestrator

// This file holds the events a transaction emits, built from the record
// alone so a redelivered message can publish the same events again
// (replayEvents, replayResult).

import (
	"context"
	"fmt"

	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/internal/jobstate"
	"github.com/fleetjob/fleetjob/schemas"
)

func (t *txn) emit(kind, subject, id string, data any) {
	t.events = append(t.events, events.Event{Kind: kind, Subject: subject, ID: id, Time: t.now, Data: data})
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
// handles the redelivered message publishes those the EVENTS stream does
// not hold yet (unpublished).
func (t *txn) replayEvents() {
	st := t.st
	t.replaying = true
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
		if jobstate.StepOver(ss.Status) {
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
	hint := "0"
	if t.spec.CallbackURL != "" {
		hint = "1"
	}
	t.events[len(t.events)-1].Hints = map[string]string{events.HintCallback: hint}
}

// replayResult puts a recorded host result back in the cache rows and
// emits its host.finished event again (same id as the first time).
func (t *txn) replayResult(exec string, hr schemas.HostResult) {
	hr = hr.WithoutLog()
	u := unit{step: hr.Step, idx: hr.Index, phase: hr.Phase}
	r := t.row(u)
	r.HostResult, r.Since = hr, hr.EndedAt
	t.emit(events.HostFinished, t.jobID(), exec, hr)
}

// unpublished drops from a replaying transaction's events those the EVENTS
// stream holds already (same kind and id), so a replay adds only what the
// crashed worker did not publish.
func (w *Worker) unpublished(ctx context.Context, t *txn) ([]events.Event, error) {
	if !t.replaying || len(t.events) == 0 {
		return t.events, nil
	}
	have, err := events.Published(ctx, w.js, t.jobID())
	if err != nil {
		return nil, err
	}
	var out []events.Event
	for _, ev := range t.events {
		if !have[events.Key(ev.Kind, ev.ID)] {
			out = append(out, ev)
		}
	}
	return out, nil
}
