package orchestrator

// This file holds host result storage: a small job's results inside its
// state, a larger job's in a key each of the jobs bucket.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/failpoint"
	"github.com/fleetjob/fleetjob/internal/pubflow"
	"github.com/fleetjob/fleetjob/schemas"
)

// replayResults re-emits the host results of reports already recorded.
func (w *Worker) replayResults(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState, t *txn, reports []schemas.Report) error {
	for _, r := range reports {
		hr, ok, err := w.hostResult(ctx, spec, st, r.Step, r.Phase, r.Host)
		if err != nil {
			return err
		}
		if ok && hr.Attempt == r.Attempt {
			t.replayResult(r.ExecID, hr)
		}
	}
	return nil
}

// hostResult finds a unit's stored result: in the state of a small job,
// in its own key otherwise.
func (w *Worker) hostResult(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState, step int, phase string, idx int) (schemas.HostResult, bool, error) {
	if spec.InlineResults() {
		hr, ok := st.Result(step, phase, idx)
		return hr, ok, nil
	}
	e, err := w.jobs.Get(ctx, schemas.KeyHostResult(st.ID, step, phase, idx))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return schemas.HostResult{}, false, nil
	}
	if err != nil {
		return schemas.HostResult{}, false, fmt.Errorf("load host result: %w", err)
	}
	var hr schemas.HostResult
	if err := json.Unmarshal(e.Value(), &hr); err != nil {
		return schemas.HostResult{}, false, nil
	}
	return hr, true, nil
}

// storeResults records final host results before the state commit that
// makes them count: a small job's in the state itself (committed with it),
// a larger job's each in its own key (rewriting one is harmless).
func (w *Worker) storeResults(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState, results []schemas.HostResult) error {
	if spec.InlineResults() {
		st.PutResults(results)
		return nil
	}
	win := pubflow.New(w.js, pubflow.DefaultSize)
	for i, r := range results {
		b, _ := json.Marshal(r)
		if err := win.PublishData(ctx, schemas.KVSubject(schemas.BucketJobs, schemas.KeyHostResult(st.ID, r.Step, r.Phase, r.Index)), b); err != nil {
			return fmt.Errorf("store host result: %w", err)
		}
		if i%1000 == 999 {
			failpoint.Hit("results-stored") // a big commit partly stored
		}
	}
	if err := win.Wait(ctx); err != nil {
		return fmt.Errorf("store host result: %w", err)
	}
	return nil
}
