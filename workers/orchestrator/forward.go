package orchestrator

// This file holds forwarded reports. With several worker processes, the
// one that takes a small job's submit command may not consume the job's
// result partition: it holds the first commit all the same, listening on
// the job's held subject (schemas.HeldSubject), and the process that
// takes the job's first reports forwards them there in one request, so
// the job is still created and finished by one state write and one event
// message. The reports are acked only once the holder answers that its
// commit holds them; any other answer (none, a timeout, an error) leaves
// them to be delivered again, as without forwarding.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetjob/fleetjob/internal/failpoint"
	"github.com/fleetjob/fleetjob/schemas"
)

// errNotHeld is a forward that found no held commit: no process holds one
// for the job (or it was written meanwhile).
var errNotHeld = errors.New("no held first commit")

// heldGone is the holder's answer when its commit was written meanwhile
// (its window ended, a command needed it): the reports go the usual way.
const heldGone = "gone"

// forwardWait bounds the wait for a holder's commit.
const forwardWait = 10 * time.Second

// mayBeHeldElsewhere says whether job id's first commit may be held by
// another process: the reports are partitioned, some partitions are
// consumed elsewhere, and the job is small (or not known here yet).
func (w *Worker) mayBeHeldElsewhere(id int64) bool {
	if w.partitions == 0 || w.creations.window <= 0 {
		return false
	}
	if spec, ok := w.specs.get(id); ok && !spec.InlineResults() {
		return false
	}
	c := w.creations
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.partitions) < w.partitions
}

// forward sends a job's reports (verified here) to the process holding its
// first commit and returns once that commit holds them; errNotHeld when
// nobody holds one.
func (w *Worker) forward(ctx context.Context, id int64, reports []schemas.Report) error {
	b, err := json.Marshal(reports)
	if err != nil {
		return fmt.Errorf("forward reports of job %d: %w", id, err)
	}
	ctx, cancel := context.WithTimeout(ctx, forwardWait)
	defer cancel()
	m, err := w.nc.RequestWithContext(ctx, schemas.HeldSubject(id), b)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return errNotHeld
	case err != nil:
		return fmt.Errorf("forward reports of job %d to its held first commit: %w", id, err)
	case string(m.Data) == heldGone:
		return errNotHeld
	case len(m.Data) > 0:
		return fmt.Errorf("held first commit of job %d: %s", id, m.Data)
	}
	w.m.ForwardedReports.Add(float64(len(reports)))
	return nil
}

// onForwarded takes the reports forwarded to job id's held first commit
// and writes the commit with them, then answers: empty once written, the
// error otherwise, heldGone when the commit was written meanwhile.
func (w *Worker) onForwarded(id int64) nats.MsgHandler {
	return func(m *nats.Msg) {
		var reports []schemas.Report
		if err := json.Unmarshal(m.Data, &reports); err != nil {
			_ = m.Respond([]byte("undecodable forwarded reports: " + err.Error()))
			return
		}
		cr := w.creations.take(id)
		if cr == nil {
			_ = m.Respond([]byte(heldGone))
			return
		}
		failpoint.Hit("forward-taken") // the holder dies with the forwarded reports
		unlock := w.locks.lock(id)
		err := w.commitHeld(cr, reports, "forwarded")
		unlock()
		var answer []byte
		if err != nil {
			answer = []byte(err.Error())
		}
		_ = m.Respond(answer)
	}
}
