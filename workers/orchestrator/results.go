package orchestrator

// This file holds host result storage: a small job's results inside its
// state, a larger job's in segments of the jobs bucket.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/fleetjob/fleetjob/internal/failpoint"
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
// in its segment otherwise.
func (w *Worker) hostResult(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState, step int, phase string, idx int) (schemas.HostResult, bool, error) {
	if spec.InlineResults() {
		hr, ok := st.Result(step, phase, idx)
		return hr, ok, nil
	}
	seg, _, err := w.loadSegment(ctx, schemas.KeyResultSegmentOf(st.ID, step, phase, idx))
	if err != nil {
		return schemas.HostResult{}, false, err
	}
	hr, ok := seg.Find(idx)
	return hr, ok, nil
}

// keepSuperseded stores, each under its own key, the results with an
// inline log that a retry is about to supersede in a small job's state,
// before the commit that retries them: the log reader finds an earlier
// attempt's log there. Writing one again (a lost race, a redelivery)
// writes the same value.
func (w *Worker) keepSuperseded(ctx context.Context, id int64, rs []schemas.HostResult) error {
	for _, r := range rs {
		b, _ := json.Marshal(r)
		key := schemas.KeyEarlierResult(id, r.Step, r.Phase, r.Index, r.Attempt)
		if _, err := w.jobs.Put(ctx, key, b); err != nil {
			return fmt.Errorf("keep earlier result %s: %w", key, err)
		}
	}
	return nil
}

// loadSegment reads a result segment and its revision (0: none yet).
func (w *Worker) loadSegment(ctx context.Context, key string) (schemas.ResultSegmentValue, uint64, error) {
	var seg schemas.ResultSegmentValue
	e, err := w.jobs.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return seg, 0, nil
	}
	if err != nil {
		return seg, 0, fmt.Errorf("load host results %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), &seg); err != nil {
		return seg, 0, fmt.Errorf("decode host results %s: %w", key, err)
	}
	return seg, e.Revision(), nil
}

// storeResults records final host results before the state commit that
// makes them count: a small job's in the state itself (committed with it),
// a larger job's in their segments, each written by compare-and-set (a
// few at once), so a commit ending 20,000 hosts writes 79 keys, and a
// segment that fails is retried alone when the report comes back.
func (w *Worker) storeResults(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState, results []schemas.HostResult) error {
	if spec.InlineResults() {
		st.PutResults(results)
		return nil
	}
	type segKey struct {
		step  int
		phase string
		seg   int
	}
	groups := map[segKey][]schemas.HostResult{}
	var order []segKey
	for _, r := range results {
		k := segKey{r.Step, r.Phase, schemas.SegmentOf(r.Index)}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(segmentWriters)
	for _, k := range order {
		g.Go(func() error {
			if err := w.storeSegment(gctx, schemas.KeyResultSegment(st.ID, k.step, k.phase, k.seg), groups[k]); err != nil {
				return err
			}
			failpoint.Hit("results-stored") // a big commit partly stored
			return nil
		})
	}
	return g.Wait()
}

// segmentWriters bounds the segments one commit writes at once.
const segmentWriters = 8

// storeSegment merges rs into their segment, retrying when another writer
// changed it meanwhile.
func (w *Worker) storeSegment(ctx context.Context, key string, rs []schemas.HostResult) error {
	seg, rev, cached := w.segs.get(key)
	for attempt := 0; ; attempt++ {
		if !cached {
			var err error
			if seg, rev, err = w.loadSegment(ctx, key); err != nil {
				return err
			}
		}
		if !seg.Merge(rs) {
			return nil // already there: a redelivery
		}
		b, _ := json.Marshal(seg)
		var err error
		var newRev uint64
		if rev == 0 {
			newRev, err = w.jobs.Create(ctx, key, b)
		} else {
			newRev, err = w.jobs.Update(ctx, key, b, rev)
		}
		if err == nil {
			w.segs.remember(key, seg, newRev, len(b))
			return nil
		}
		if (errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)) && attempt < 50 {
			if !cached { // someone else's write between our read and ours
				w.m.CASConflicts.Inc()
			}
			cached = false
			continue
		}
		w.segs.forget(key)
		return fmt.Errorf("store host results %s: %w", key, err)
	}
}

// Segments holds the result segments a process's workers wrote last,
// with their revisions: the next write of one needs no read unless another
// process wrote it meanwhile (the compare-and-set tells).
type Segments struct {
	mu    sync.Mutex
	m     map[string]cachedSegment
	bytes int // the encoded sizes of what m holds
}

type cachedSegment struct {
	seg  schemas.ResultSegmentValue
	rev  uint64
	size int
}

// NewSegments returns an empty segment cache for a process's workers.
func NewSegments() *Segments { return &Segments{m: map[string]cachedSegment{}} }

// get returns a copy of a segment written last.
func (s *Segments) get(key string) (schemas.ResultSegmentValue, uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.m[key]
	if !ok {
		return schemas.ResultSegmentValue{}, 0, false
	}
	return schemas.ResultSegmentValue{Results: slices.Clone(c.seg.Results), Earlier: slices.Clone(c.seg.Earlier)}, c.rev, true
}

// remember records a segment as written at rev (size bytes encoded),
// unless a newer write of it is already recorded.
func (s *Segments) remember(key string, seg schemas.ResultSegmentValue, rev uint64, size int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.m[key]
	if ok && c.rev >= rev {
		return
	}
	if ok {
		s.bytes -= c.size
	}
	if len(s.m) > maxCachedSegments || s.bytes+size > maxCachedSegmentBytes {
		clear(s.m)
		s.bytes = 0
	}
	s.m[key] = cachedSegment{seg, rev, size}
	s.bytes += size
}

func (s *Segments) forget(key string) {
	s.mu.Lock()
	s.drop(key)
	s.mu.Unlock()
}

// drop removes key; s.mu is held.
func (s *Segments) drop(key string) {
	if c, ok := s.m[key]; ok {
		s.bytes -= c.size
		delete(s.m, key)
	}
}

// forgetJob drops a finished job's segments.
func (s *Segments) forgetJob(id int64) {
	prefix := strconv.FormatInt(id, 10) + "."
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.m {
		if strings.HasPrefix(k, prefix) {
			s.drop(k)
		}
	}
}

// maxCachedSegments and maxCachedSegmentBytes bound the segment cache
// (a segment's results are about 60 KiB at most, its inline logs 64 KiB
// more, MaxSegmentInlineLog each): past either the cache starts again
// empty.
const (
	maxCachedSegments     = 2000
	maxCachedSegmentBytes = 64 << 20
)
