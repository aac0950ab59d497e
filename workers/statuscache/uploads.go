package statuscache

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
)

// UploadResults returns the stored results of a file step's upload units
// (its source hosts), by unit index, for units 0..units-1. A unit that has
// no result yet is left out; a result may be of an earlier attempt than the
// unit's current one, which the caller compares with the job state.
func (c *Cache) UploadResults(ctx context.Context, id int64, step, units int) (map[int]schemas.HostResult, error) {
	idx := make([]int, units)
	for i := range idx {
		idx[i] = i
	}
	return c.Results(ctx, id, step, schemas.PhaseUpload, idx)
}

// Results returns the stored final results of some units of a step —
// targets (phase "") or upload units (schemas.PhaseUpload) — by index,
// straight from the jobs bucket: they are written there before the state
// commit that makes them count, so they are never behind a state read
// from KV, while the cached host rows may be.
func (c *Cache) Results(ctx context.Context, id int64, step int, phase string, idx []int) (map[int]schemas.HostResult, error) {
	out := make(map[int]schemas.HostResult, len(idx))
	segs := map[int]*schemas.ResultSegmentValue{} // each read once
	for _, i := range idx {
		seg, ok := segs[schemas.SegmentOf(i)]
		if !ok {
			key := schemas.KeyResultSegmentOf(id, step, phase, i)
			seg = &schemas.ResultSegmentValue{}
			e, err := c.kv.Get(ctx, key)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
			case err != nil:
				return nil, schemas.Unavailable(err, "host results %s", key)
			default:
				_ = json.Unmarshal(e.Value(), seg)
			}
			segs[schemas.SegmentOf(i)] = seg
		}
		if r, ok := seg.Find(i); ok {
			out[i] = r
		}
	}
	return out, nil
}
