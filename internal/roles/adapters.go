package roles

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/callback"
	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// The adapters below give the API core its read interfaces (api.JobReader,
// api.JobSearch, api.JobQueuer, api.CallbackReader) over the workers'
// status cache and callback records; the log index's reader fits
// api.LogReader as it is.

// jobReader is api.JobReader over the status cache.
type jobReader struct{ *statuscache.Cache }

func (r jobReader) Load(ctx context.Context, id int64) (*schemas.JobSpec, *schemas.JobState, error) {
	spec, st, _, err := r.Cache.Load(ctx, id)
	return spec, st, err
}

// jobSearch is api.JobSearch over the status cache.
type jobSearch struct{ c *statuscache.Cache }

func (s jobSearch) List(ctx context.Context, q api.JobQuery) ([]schemas.JobSummary, int, error) {
	return s.c.List(ctx, statuscache.ListQuery(q))
}

func (s jobSearch) HostJobs(ctx context.Context, h schemas.Host, limit int) ([]int64, error) {
	return s.c.HostJobs(ctx, h, limit)
}

func (s jobSearch) JobsBefore(ctx context.Context, below int64, n int) ([]schemas.JobSummary, int64, error) {
	return s.c.JobsBefore(ctx, below, n)
}

func (s jobSearch) JobsOnHosts(ctx context.Context, hosts []schemas.Host, ids []int64) (map[int64]bool, error) {
	return s.c.JobsOnHosts(ctx, hosts, ids)
}

func (s jobSearch) Facts(ctx context.Context, ids []int64) (map[int64]api.JobFacts, error) {
	facts, err := s.c.Facts(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[int64]api.JobFacts, len(facts))
	for id, f := range facts {
		out[id] = api.JobFacts{Scope: f.Scope, StepTypes: f.StepTypes, Extra: f.Extra}
	}
	return out, nil
}

// queuer is api.JobQueuer over the status cache's batcher, which writes
// accepted jobs off the request path.
type queuer struct{ b *statuscache.Batcher }

func (q queuer) Queued(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState) {
	q.b.Queued(ctx, spec, st)
}

// callbackReader is api.CallbackReader over the jobs bucket.
type callbackReader struct{ kv jetstream.KeyValue }

func (r callbackReader) Callback(ctx context.Context, id int64) (schemas.CallbackRecord, bool, error) {
	return callback.Get(ctx, r.kv, id)
}
