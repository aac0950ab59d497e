package statuscache

import (
	"context"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetjob/fleetjob/schemas"
)

// Batcher writes "queued" summaries of just-accepted jobs in batches, off
// the request path: one pipeline per batch instead of one round trip per
// submission. Until a batch lands, reads of the job find it in the JOBS
// stream (Cache.Load), so nothing is lost if Redis is slow. A full queue
// slows submissions down to what the cache takes instead of dropping
// writes (and warning for each).
type Batcher struct {
	c   *Cache
	in  chan queued
	log *slog.Logger
}

type queued struct {
	spec *schemas.JobSpec
	st   *schemas.JobState
}

// NewBatcher returns a batcher holding at most size pending writes.
func NewBatcher(c *Cache, size int) *Batcher {
	return &Batcher{c: c, in: make(chan queued, size), log: c.log}
}

// Queued hands a just-accepted job to the batcher, waiting while the
// queue is full; a submission whose request ends meanwhile leaves its job
// to be cached when a worker takes it.
func (b *Batcher) Queued(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState) {
	select {
	case b.in <- queued{spec, st}:
		return
	default:
	}
	select {
	case b.in <- queued{spec, st}:
	case <-ctx.Done():
	}
}

// Run writes batches until ctx ends, then flushes what is pending. A batch
// already taken is written even when ctx ends meanwhile.
func (b *Batcher) Run(ctx context.Context) error {
	wctx := context.WithoutCancel(ctx)
	for {
		select {
		case <-ctx.Done():
			b.flush(wctx, b.drain(nil))
			return nil
		case q := <-b.in:
			b.flush(wctx, b.drain([]queued{q}))
		}
	}
}

func (b *Batcher) drain(batch []queued) []queued {
	for len(batch) < 512 {
		select {
		case q := <-b.in:
			batch = append(batch, q)
		default:
			return batch
		}
	}
	return batch
}

func (b *Batcher) flush(ctx context.Context, batch []queued) {
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := b.c.run(ctx, func(pipe redis.Pipeliner) {
		for _, q := range batch {
			b.c.queueJob(ctx, pipe, schemas.Summarize(q.spec, q.st), 0)
			queueHostIndex(ctx, pipe, q.spec, q.st.ID)
		}
	})
	if err != nil {
		b.log.Warn("cache queued jobs", "jobs", len(batch), "err", err)
	}
}
