package statuscache

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetjob/fleetjob/schemas"
)

// ListQuery selects and orders jobs.
type ListQuery struct {
	Status string // one job status word, or empty
	Name   string // exact name, or empty
	Sort   string // id (default), created_at or updated_at
	Desc   bool
	Page   int // from 1
	Size   int
	// Scopes, when set, keeps only jobs of these scopes ("biz:2").
	Scopes []string
}

// List answers a job listing from the Redis indexes, rebuilding them from
// KV first when Redis has been flushed.
func (c *Cache) List(ctx context.Context, q ListQuery) ([]schemas.JobSummary, int, error) {
	if err := c.EnsureBuilt(ctx); err != nil {
		return nil, 0, err
	}
	if len(q.Scopes) > 0 {
		return c.listScoped(ctx, q)
	}
	start := int64((q.Page - 1) * q.Size)
	stop := start + int64(q.Size) - 1
	var ids []int64
	var total int64
	simple := (q.Status == "" || q.Name == "") && (q.Sort != "updated_at" || (q.Status == "" && q.Name == ""))
	if simple {
		key := keyAll
		switch {
		case q.Sort == "updated_at":
			key = keyUpdated
		case q.Status != "":
			key = keyStatus(q.Status)
		case q.Name != "":
			key = keyName(q.Name)
		}
		n, err := c.rdb.ZCard(ctx, key).Result()
		if err != nil {
			return nil, 0, schemas.Unavailable(err, "list jobs")
		}
		total = n
		rng := c.rdb.ZRange(ctx, key, start, stop)
		if q.Desc {
			rng = c.rdb.ZRevRange(ctx, key, start, stop)
		}
		members, err := rng.Result()
		if err != nil {
			return nil, 0, schemas.Unavailable(err, "list jobs")
		}
		ids = parseIDs(members)
	} else {
		var err error
		ids, err = c.filtered(ctx, q)
		if err != nil {
			return nil, 0, err
		}
		total = int64(len(ids))
		if start >= total {
			ids = nil
		} else {
			ids = ids[start:min(stop+1, total)]
		}
	}
	out, err := c.summaries(ctx, ids)
	return out, int(total), err
}

// filtered handles two filters at once, or a filter sorted by update time,
// in memory: name sets are small.
func (c *Cache) filtered(ctx context.Context, q ListQuery) ([]int64, error) {
	key := keyName(q.Name)
	if q.Name == "" {
		key = keyStatus(q.Status)
	}
	members, err := c.rdb.ZRange(ctx, key, 0, -1).Result()
	if err != nil {
		return nil, schemas.Unavailable(err, "list jobs")
	}
	if q.Name != "" && q.Status != "" {
		if members, err = c.keepIn(ctx, keyStatus(q.Status), members); err != nil {
			return nil, err
		}
	}
	return c.ordered(ctx, members, q)
}

// keepIn keeps the members that are also in the sorted set key.
func (c *Cache) keepIn(ctx context.Context, key string, members []string) ([]string, error) {
	if len(members) == 0 {
		return members, nil
	}
	scores, err := c.rdb.ZMScore(ctx, key, members...).Result()
	if err != nil {
		return nil, schemas.Unavailable(err, "list jobs")
	}
	kept := members[:0]
	for i, m := range members {
		if scores[i] != 0 {
			kept = append(kept, m)
		}
	}
	return kept, nil
}

// ordered sorts job ids by id, or by update time (then id), as q asks.
func (c *Cache) ordered(ctx context.Context, members []string, q ListQuery) ([]int64, error) {
	ids := parseIDs(members)
	order := map[int64]float64{}
	if q.Sort == "updated_at" && len(members) > 0 {
		scores, err := c.rdb.ZMScore(ctx, keyUpdated, members...).Result()
		if err != nil {
			return nil, schemas.Unavailable(err, "list jobs")
		}
		for i, id := range ids {
			order[id] = scores[i]
		}
	}
	slices.SortFunc(ids, func(a, b int64) int {
		r := cmp.Compare(order[a], order[b])
		if r == 0 {
			r = cmp.Compare(a, b)
		}
		if q.Desc {
			return -r
		}
		return r
	})
	return ids, nil
}

func parseIDs(members []string) []int64 {
	ids := make([]int64, 0, len(members))
	for _, m := range members {
		if id, err := strconv.ParseInt(m, 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	return ids
}

func (c *Cache) summaries(ctx context.Context, ids []int64) ([]schemas.JobSummary, error) {
	pipe := c.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.Get(ctx, keyJob(id))
	}
	if len(ids) > 0 {
		_, _ = pipe.Exec(ctx)
	}
	out := make([]schemas.JobSummary, 0, len(ids))
	for i, id := range ids {
		var s schemas.JobSummary
		b, err := readSummary(cmds[i])
		if err == nil && json.Unmarshal(b, &s) == nil {
			out = append(out, s)
			continue
		}
		s, err = c.Job(ctx, id)
		if errors.Is(err, schemas.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// HostJobs lists, newest first, the ids of jobs that targeted a host.
func (c *Cache) HostJobs(ctx context.Context, h schemas.Host, limit int) ([]int64, error) {
	if err := c.EnsureBuilt(ctx); err != nil {
		return nil, err
	}
	members, err := c.rdb.ZRevRange(ctx, keyHostJobs(h), 0, int64(limit)-1).Result()
	if err != nil {
		return nil, schemas.Unavailable(err, "host jobs")
	}
	return parseIDs(members), nil
}

// EnsureBuilt rebuilds the job indexes from KV when Redis lost them (a
// fresh or flushed Redis). Concurrent callers share one rebuild.
func (c *Cache) EnsureBuilt(ctx context.Context) error {
	n, err := c.rdb.Exists(ctx, keyBuilt).Result()
	if err != nil {
		return schemas.Unavailable(err, "status cache")
	}
	if n == 1 {
		return nil
	}
	_, err, _ = c.sf.Do("rebuild", func() (any, error) { return nil, c.Rebuild(ctx) })
	return err
}

// Rebuild writes every job's summary and host index from KV, then marks the
// cache built.
func (c *Cache) Rebuild(ctx context.Context) error {
	lister, err := c.kv.ListKeysFiltered(ctx, "*")
	if err != nil {
		return schemas.Unavailable(err, "rebuild: list jobs")
	}
	var ids []int64
	for k := range lister.Keys() {
		if id, err := strconv.ParseInt(k, 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	for start := 0; start < len(ids); start += 256 {
		type loaded struct {
			spec *schemas.JobSpec
			st   *schemas.JobState
			rev  uint64
		}
		var batch []loaded
		for _, id := range ids[start:min(start+256, len(ids))] {
			spec, st, rev, err := c.Load(ctx, id)
			if errors.Is(err, schemas.ErrNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("rebuild: %w", err)
			}
			batch = append(batch, loaded{spec, st, rev})
		}
		err := c.run(ctx, func(pipe redis.Pipeliner) {
			for _, l := range batch {
				c.queueJob(ctx, pipe, schemas.Summarize(l.spec, l.st), l.rev)
				queueHostIndex(ctx, pipe, l.spec, l.st.ID)
			}
		})
		if err != nil {
			return schemas.Unavailable(err, "rebuild")
		}
	}
	// what the retention does not keep goes again at once
	if _, err := c.trimAll(ctx, time.Now()); err != nil {
		return err
	}
	if err := c.rdb.Set(ctx, keyBuilt, "1", 0).Err(); err != nil {
		return schemas.Unavailable(err, "rebuild")
	}
	c.log.Info("status cache rebuilt from JetStream", "jobs", len(ids))
	return nil
}

// listScoped answers a listing kept to some scopes from their index sets,
// filtered and ordered in memory: a scope holds the jobs the cache keeps
// of it (see Retention), not the whole history.
func (c *Cache) listScoped(ctx context.Context, q ListQuery) ([]schemas.JobSummary, int, error) {
	pipe := c.rdb.Pipeline()
	sets := make([]*redis.StringSliceCmd, len(q.Scopes))
	for i, sc := range q.Scopes {
		sets[i] = pipe.ZRange(ctx, keyScope(sc), 0, -1)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, schemas.Unavailable(err, "list jobs")
	}
	var members []string
	for _, s := range sets {
		members = append(members, s.Val()...)
	}
	slices.Sort(members)
	members = slices.Compact(members)
	var err error
	for _, f := range []struct {
		on  bool
		key string
	}{{q.Status != "", keyStatus(q.Status)}, {q.Name != "", keyName(q.Name)}} {
		if f.on {
			if members, err = c.keepIn(ctx, f.key, members); err != nil {
				return nil, 0, err
			}
		}
	}
	ids, err := c.ordered(ctx, members, q)
	if err != nil {
		return nil, 0, err
	}
	total := len(ids)
	from := min(max(q.Page-1, 0)*q.Size, total)
	out, err := c.summaries(ctx, ids[from:min(from+q.Size, total)])
	return out, total, err
}
