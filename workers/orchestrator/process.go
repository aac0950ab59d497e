package orchestrator

// This file holds the processing of one job: load its spec and state, apply
// a transaction, commit it by compare-and-set, retry a lost race.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/failpoint"
	"github.com/fleetjob/fleetjob/schemas"
)

// spec returns a job's spec, cached: specs never change.
func (w *Worker) spec(ctx context.Context, id int64) (*schemas.JobSpec, error) {
	if s, ok := w.specs.get(id); ok {
		return s, nil
	}
	s, err := w.cache.LoadSpec(ctx, id)
	if err != nil {
		return nil, err
	}
	w.specs.put(id, s)
	return s, nil
}

func (w *Worker) loadState(ctx context.Context, id int64) (*schemas.JobState, uint64, error) {
	e, err := w.jobs.Get(ctx, schemas.KeyJobState(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, schemas.NotFound("job %d does not exist", id)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("load job %d: %w", id, err)
	}
	var st schemas.JobState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return nil, 0, fmt.Errorf("decode job %d: %w", id, err)
	}
	return &st, e.Revision(), nil
}

// process applies reports (and a stop) to a job, advances it, commits the
// new state by compare-and-set, and only then performs the effects. A lost
// race reloads and recomputes; resend republishes tasks of dispatched hosts
// in case an earlier attempt committed but died before publishing.
func (w *Worker) process(ctx context.Context, id int64, reports []schemas.Report, stop *schemas.StopCommand, op *schemas.OpCommand, resend bool) error {
	start := time.Now()
	defer func() { w.m.ProcessSeconds.Observe(time.Since(start).Seconds()) }()
	if err := failpoint.Fail("process"); err != nil { // a job no worker can move
		return err
	}
	spec, err := w.spec(ctx, id)
	if err != nil {
		return err
	}
	ctx, done := w.heavyTurn(ctx, spec)
	defer done()
	for attempt := 0; ; attempt++ {
		st, rev, err := w.loadState(ctx, id)
		if errors.Is(err, schemas.ErrNotFound) {
			// its spec exists: the job's first commit is held, or its
			// submit command not yet taken
			return fmt.Errorf("job %d: %w", id, errNotCreated)
		}
		if err != nil {
			return err
		}
		if schemas.JobFinal(st.Status) && op == nil && !resend {
			return nil // late reports for a finished job
		}
		t := newTxn(spec, st, time.Now().UTC(), w.dir)
		var replayed []schemas.Report
		if resend {
			// A redelivered message may have been committed by a worker that
			// died before its effects: redo those from the record.
			replayed = t.recorded(reports)
			t.replayEvents()
		}
		if schemas.JobFinal(st.Status) && op == nil {
			return w.replay(ctx, spec, st, rev, t, replayed)
		}
		for _, r := range reports {
			t.apply(r)
		}
		if stop != nil {
			t.stop(stop.By, stop.Reason)
		}
		if op != nil {
			if err := t.op(*op); err != nil {
				return fmt.Errorf("job %d: %w", id, err)
			}
		}
		t.advance()
		if resend {
			t.resend()
		}
		if t.changed {
			st.UpdatedAt = t.now
			if err := w.keepSuperseded(ctx, st.ID, t.superseded); err != nil {
				return err
			}
			if err := w.storeResults(ctx, spec, st, t.results); err != nil {
				return err
			}
			b, _ := json.Marshal(st)
			if len(reports) > 0 {
				failpoint.Hit("report-computed") // the new state is ready, not yet committed
			}
			newRev, err := w.jobs.Update(ctx, schemas.KeyJobState(id), b, rev)
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				w.m.CASConflicts.Inc()
				if attempt >= 50 {
					return fmt.Errorf("job %d: state kept changing under us", id)
				}
				time.Sleep(time.Duration(rand.IntN(5*(attempt+1))) * time.Millisecond)
				continue
			}
			if err != nil {
				return fmt.Errorf("commit job %d: %w", id, err)
			}
			rev = newRev
			if len(reports) > 0 {
				failpoint.Hit("report-committed")
				if schemas.JobFinal(st.Status) {
					failpoint.Hit("report-committed-final") // the commit that ends the job
				}
			}
		}
		if err := w.replayResults(ctx, spec, st, t, replayed); err != nil {
			return err
		}
		return w.effects(ctx, spec, st, rev, t)
	}
}

// replay redoes the effects of a commit whose worker may have died before
// them, for a job that commit finished: the cache, the events (replayEvents
// was called; those the EVENTS stream holds already are not published
// again).
func (w *Worker) replay(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState, rev uint64, t *txn, reports []schemas.Report) error {
	if err := w.replayResults(ctx, spec, st, t, reports); err != nil {
		return err
	}
	t.finished = true
	return w.effects(ctx, spec, st, rev, t)
}
