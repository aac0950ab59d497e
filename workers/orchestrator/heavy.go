package orchestrator

// This file holds the pacing of big jobs: a process's workers work on one
// job of thousands of hosts at a time (its creation, a commit of its
// reports, the expiry of its hosts), so a storm of them leaves the
// machine's other cores to the small jobs submitted meanwhile instead of
// taking every core at once. A big job's work is long and its deadline
// loose (all final within seconds of its wait); a one-host job's is short
// and someone is waiting for it.

import (
	"context"

	"github.com/fleetjob/fleetjob/schemas"
)

// HeavyHosts is how many target hosts make a job big.
const HeavyHosts = 1000

// Heavy admits one big job's work at a time, shared by a process's
// workers.
type Heavy struct{ sem chan struct{} }

// NewHeavy returns the pacing of one process.
func NewHeavy() *Heavy { return &Heavy{sem: make(chan struct{}, 1)} }

// heavyKey marks a context whose work has the turn already (a creation
// that finds its job created carries on as a commit, in the same turn).
type heavyKey struct{}

// heavyTurn waits for the process's turn at big work when spec is a big
// job and ctx does not have it yet, and returns the context that has it
// and what ends the turn.
func (w *Worker) heavyTurn(ctx context.Context, spec *schemas.JobSpec) (context.Context, func()) {
	if spec.Units() < HeavyHosts || ctx.Value(heavyKey{}) != nil {
		return ctx, func() {}
	}
	w.heavy.sem <- struct{}{}
	return context.WithValue(ctx, heavyKey{}, true), func() { <-w.heavy.sem }
}
