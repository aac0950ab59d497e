package statuscache

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetjob/fleetjob/schemas"
)

// Retention bounds what the cache keeps of finished jobs: the newest
// MaxFinished of them, none older than MaxAge (by last update). Jobs not
// yet final are always kept. An evicted job is still read from JetStream
// (Job, Hosts and Load fall back to the jobs bucket, as after a Redis
// flush); it leaves the listings the cache serves. Zero fields do not
// bound.
type Retention struct {
	MaxFinished int
	MaxAge      time.Duration
}

// DefaultRetention is what a cache keeps unless configured: the
// in-process Redis of the all-in-one mode lives in the process's heap, so
// it keeps less.
func DefaultRetention(inProcess bool) Retention {
	if inProcess {
		return Retention{MaxFinished: 10_000, MaxAge: 24 * time.Hour}
	}
	return Retention{MaxFinished: 1_000_000, MaxAge: 30 * 24 * time.Hour}
}

// trimBatch bounds the jobs one Trim pass evicts, so a pass stays short
// (a large backlog goes over several).
const trimBatch = 1000

// finalStatuses are the status sets of finished jobs.
var finalStatuses = func() []string {
	var out []string
	for _, s := range schemas.JobStatuses {
		if schemas.JobFinal(s) {
			out = append(out, s)
		}
	}
	return out
}()

// Trim evicts up to trimBatch finished jobs beyond r: the oldest by id
// over MaxFinished, and those last updated before now-MaxAge. It returns
// how many it evicted.
func (c *Cache) Trim(ctx context.Context, r Retention, now time.Time) (int, error) {
	var ids []int64
	if r.MaxFinished > 0 {
		over, err := c.overCount(ctx, r.MaxFinished)
		if err != nil {
			return 0, err
		}
		ids = append(ids, over...)
	}
	if r.MaxAge > 0 && len(ids) < trimBatch {
		old, err := c.olderThan(ctx, now.Add(-r.MaxAge), trimBatch-len(ids))
		if err != nil {
			return 0, err
		}
		ids = append(ids, old...)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	return len(ids), c.evict(ctx, ids)
}

// overCount returns the oldest finished jobs beyond keep (at most
// trimBatch): each final status set is ordered by id, so the lowest ids
// of their union are the oldest.
func (c *Cache) overCount(ctx context.Context, keep int) ([]int64, error) {
	pipe := c.rdb.Pipeline()
	cards := make([]*redis.IntCmd, len(finalStatuses))
	for i, s := range finalStatuses {
		cards[i] = pipe.ZCard(ctx, keyStatus(s))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, schemas.Unavailable(err, "trim: count finished jobs")
	}
	total := 0
	for _, card := range cards {
		total += int(card.Val())
	}
	excess := min(total-keep, trimBatch)
	if excess <= 0 {
		return nil, nil
	}
	pipe = c.rdb.Pipeline()
	lowest := make([]*redis.StringSliceCmd, len(finalStatuses))
	for i, s := range finalStatuses {
		lowest[i] = pipe.ZRange(ctx, keyStatus(s), 0, int64(excess)-1)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, schemas.Unavailable(err, "trim: oldest finished jobs")
	}
	var ids []int64
	for _, l := range lowest {
		ids = append(ids, parseIDs(l.Val())...)
	}
	slices.Sort(ids)
	return ids[:min(excess, len(ids))], nil
}

// olderThan returns up to n finished jobs last updated before cutoff.
func (c *Cache) olderThan(ctx context.Context, cutoff time.Time, n int) ([]int64, error) {
	members, err := c.rdb.ZRangeByScore(ctx, keyUpdated, &redis.ZRangeBy{
		Min: "-inf", Max: "(" + strconv.FormatInt(cutoff.UnixMilli(), 10), Count: int64(n),
	}).Result()
	if err != nil {
		return nil, schemas.Unavailable(err, "trim: jobs not updated since %s", cutoff)
	}
	if len(members) == 0 {
		return nil, nil
	}
	pipe := c.rdb.Pipeline()
	scores := make([]*redis.FloatSliceCmd, len(finalStatuses))
	for i, s := range finalStatuses {
		scores[i] = pipe.ZMScore(ctx, keyStatus(s), members...)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, schemas.Unavailable(err, "trim: statuses of old jobs")
	}
	var ids []int64
	for i, m := range members {
		for _, sc := range scores {
			if v := sc.Val(); i < len(v) && v[i] != 0 {
				if id, err := strconv.ParseInt(m, 10, 64); err == nil {
					ids = append(ids, id)
				}
				break
			}
		}
	}
	return ids, nil
}

// evict removes jobs from the cache: their summaries and host rows, and
// their entries in every index (the per-host ones from the job's spec).
func (c *Cache) evict(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	sums, err := c.readSummaries(ctx, ids)
	if err != nil {
		return schemas.Unavailable(err, "trim: read summaries")
	}
	hosts := make([][]schemas.Host, len(ids))
	for i, id := range ids {
		if spec, err := c.LoadSpec(ctx, id); err == nil {
			hosts[i] = allTargets(spec)
		}
	}
	return c.run(ctx, func(pipe redis.Pipeliner) {
		for i, id := range ids {
			member := strconv.FormatInt(id, 10)
			pipe.Del(ctx, keyJob(id), keyHosts(id))
			pipe.ZRem(ctx, keyAll, member)
			pipe.ZRem(ctx, keyUpdated, member)
			for _, s := range schemas.JobStatuses {
				pipe.ZRem(ctx, keyStatus(s), member)
			}
			var sum schemas.JobSummary
			if json.Unmarshal(sums[i], &sum) == nil {
				if sum.Name != "" {
					pipe.ZRem(ctx, keyName(sum.Name), member)
				}
				if sum.Scope != "" {
					pipe.ZRem(ctx, keyScope(sum.Scope), member)
				}
			}
			for _, h := range hosts[i] {
				pipe.ZRem(ctx, keyHostJobs(h), member)
			}
		}
	})
}

// readSummaries reads the summaries of ids, nil where there is none; a
// job an older fleetjob kept as a hash is read from its hash.
func (c *Cache) readSummaries(ctx context.Context, ids []int64) ([][]byte, error) {
	pipe := c.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.Get(ctx, keyJob(id))
	}
	_, _ = pipe.Exec(ctx)
	out := make([][]byte, len(ids))
	var old []int
	for i, cmd := range cmds {
		b, err := readSummary(cmd)
		switch {
		case err == nil:
			out[i] = b
		case legacy(err):
			old = append(old, i)
		case !errors.Is(err, redis.Nil) && !errors.Is(err, errBadSummary):
			return nil, err
		}
	}
	if len(old) == 0 {
		return out, nil
	}
	pipe = c.rdb.Pipeline()
	for _, i := range old {
		cmds[i] = pipe.HGet(ctx, keyJob(ids[i]), "v")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	for _, i := range old {
		out[i], _ = cmds[i].Bytes()
	}
	return out, nil
}

// Retain sets the retention Rebuild and RunTrimmer apply (none until set).
func (c *Cache) Retain(r Retention) {
	c.retentionMu.Lock()
	c.retention = r
	c.retentionMu.Unlock()
}

func (c *Cache) retained() Retention {
	c.retentionMu.Lock()
	defer c.retentionMu.Unlock()
	return c.retention
}

// trimAll trims with the cache's retention until a pass evicts less than
// a batch (a backlog, after a restart or a lowered bound, takes several).
func (c *Cache) trimAll(ctx context.Context, now time.Time) (int, error) {
	r := c.retained()
	if r.MaxFinished <= 0 && r.MaxAge <= 0 {
		return 0, nil
	}
	total := 0
	for ctx.Err() == nil {
		n, err := c.Trim(ctx, r, now)
		total += n
		if err != nil || n < trimBatch {
			return total, err
		}
	}
	return total, ctx.Err()
}

// RunTrimmer trims every period until ctx ends.
func (c *Cache) RunTrimmer(ctx context.Context, every time.Duration) error {
	return runEvery(ctx, every, func() {
		n, err := c.trimAll(ctx, time.Now())
		if err != nil && ctx.Err() == nil {
			c.log.Warn("trim the status cache", "err", err)
		}
		if n > 0 {
			c.log.Debug("status cache trimmed", "jobs", n)
		}
	})
}

// runEvery calls f every period until ctx ends.
func runEvery(ctx context.Context, every time.Duration, f func()) error {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		f()
	}
}
