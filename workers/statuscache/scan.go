package statuscache

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/fleetjob/fleetjob/schemas"
)

// Reads for surfaces that filter jobs on more than the indexes hold (the
// BlueKing job list): a walk down the ids, the immutable facts of specs,
// and membership in the per-host index.

const keyFacts = keyPrefix + "facts"

// maxFactValue bounds the Extra values SpecFacts keeps.
const maxFactValue = 64

// SpecFacts are the small facts of a job's spec that list filters need
// beyond its summary. A spec never changes once the job exists, so they
// are cached in Redis for good (and refilled from KV after a flush).
type SpecFacts struct {
	Scope     *schemas.Scope `json:"scope,omitempty"`
	StepTypes []string       `json:"step_types"`
	// Extra holds the spec's extra fields whose values are short.
	Extra map[string]string `json:"extra,omitempty"`
}

func factsOf(spec *schemas.JobSpec) SpecFacts {
	f := SpecFacts{Scope: spec.Scope, StepTypes: make([]string, 0, len(spec.Steps))}
	for _, st := range spec.Steps {
		f.StepTypes = append(f.StepTypes, st.Type)
	}
	for k, v := range spec.Extra {
		if len(v) <= maxFactValue {
			if f.Extra == nil {
				f.Extra = map[string]string{}
			}
			f.Extra[k] = v
		}
	}
	return f
}

// JobsBefore returns up to n job summaries with ids below below, newest
// first, and the smallest id it looked at (0 when no job is left below
// it). Ids are the JOBS stream sequence, so this walks back in submission
// order and is not disturbed by jobs added meanwhile.
func (c *Cache) JobsBefore(ctx context.Context, below int64, n int) ([]schemas.JobSummary, int64, error) {
	if err := c.EnsureBuilt(ctx); err != nil {
		return nil, 0, err
	}
	members, err := c.rdb.ZRevRangeByScore(ctx, keyAll, &redis.ZRangeBy{
		Max: "(" + strconv.FormatInt(below, 10), Min: "-inf", Count: int64(n),
	}).Result()
	if err != nil {
		return nil, 0, schemas.Unavailable(err, "list jobs")
	}
	ids := parseIDs(members)
	var next int64
	if len(members) == n && len(ids) > 0 {
		next = ids[len(ids)-1]
	}
	sums, err := c.summaries(ctx, ids)
	return sums, next, err
}

// Facts returns the spec facts of jobs, from Redis or else from the
// jobs bucket (or the JOBS stream for a job no worker has taken yet); a
// job that does not exist is left out.
func (c *Cache) Facts(ctx context.Context, ids []int64) (map[int64]SpecFacts, error) {
	out := make(map[int64]SpecFacts, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	fields := make([]string, len(ids))
	for i, id := range ids {
		fields[i] = strconv.FormatInt(id, 10)
	}
	vals, herr := c.rdb.HMGet(ctx, keyFacts, fields...).Result()
	if herr != nil {
		c.log.Warn("redis read failed; answering from JetStream", "err", herr)
		vals = make([]any, len(ids))
	}
	fill := map[string]any{}
	for i, id := range ids {
		if s, ok := vals[i].(string); ok {
			var f SpecFacts
			if json.Unmarshal([]byte(s), &f) == nil {
				out[id] = f
				continue
			}
		}
		spec, err := c.LoadSpec(ctx, id)
		if errors.Is(err, schemas.ErrNotFound) {
			var ok bool
			if spec, _, ok = c.queued(ctx, id); !ok {
				continue
			}
		} else if err != nil {
			return nil, err
		}
		f := factsOf(spec)
		out[id] = f
		b, _ := json.Marshal(f)
		fill[fields[i]] = b
	}
	if len(fill) > 0 && herr == nil {
		if err := c.rdb.HSet(ctx, keyFacts, fill).Err(); err != nil {
			c.log.Warn("cache spec facts", "err", err)
		}
	}
	return out, nil
}

// JobsOnHosts reports which of ids targeted any of hosts, from the
// per-host index.
func (c *Cache) JobsOnHosts(ctx context.Context, hosts []schemas.Host, ids []int64) (map[int64]bool, error) {
	out := map[int64]bool{}
	if len(ids) == 0 || len(hosts) == 0 {
		return out, nil
	}
	members := make([]string, len(ids))
	for i, id := range ids {
		members[i] = strconv.FormatInt(id, 10)
	}
	pipe := c.rdb.Pipeline()
	cmds := make([]*redis.FloatSliceCmd, len(hosts))
	for i, h := range hosts {
		cmds[i] = pipe.ZMScore(ctx, keyHostJobs(h), members...)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, schemas.Unavailable(err, "host jobs")
	}
	for _, cmd := range cmds {
		for i, score := range cmd.Val() {
			if score != 0 {
				out[ids[i]] = true
			}
		}
	}
	return out, nil
}
