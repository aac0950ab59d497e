package statuscache

// This file holds the repair of entries whose write failed. A committed
// state whose cache write fails (Redis slow or away past the write's
// timeout) would otherwise leave the entry at its older state for good:
// reads find an entry, so nothing rebuilds it. The job is remembered and
// its entry rewritten from JetStream (summary and every row, by revision,
// so a newer write that got through meanwhile is never undone) until that
// succeeds.

import (
	"context"
	"time"
)

// stale remembers a job whose cache write failed.
func (c *Cache) stale(id int64) {
	c.repairMu.Lock()
	if c.repairs == nil {
		c.repairs = map[int64]struct{}{}
	}
	c.repairs[id] = struct{}{}
	c.repairMu.Unlock()
}

// Stale is how many jobs wait for their entry to be repaired.
func (c *Cache) Stale() int {
	c.repairMu.Lock()
	defer c.repairMu.Unlock()
	return len(c.repairs)
}

// Repair rewrites the entries of the jobs whose write failed, from
// JetStream; those it cannot rewrite now stay for the next call.
func (c *Cache) Repair(ctx context.Context) int {
	c.repairMu.Lock()
	ids := make([]int64, 0, len(c.repairs))
	for id := range c.repairs {
		ids = append(ids, id)
	}
	c.repairMu.Unlock()
	done := 0
	for _, id := range ids {
		if err := c.repairOne(ctx, id); err != nil {
			c.log.Debug("cache repair", "job", id, "err", err)
			continue
		}
		c.repairMu.Lock()
		delete(c.repairs, id)
		c.repairMu.Unlock()
		done++
	}
	return done
}

func (c *Cache) repairOne(ctx context.Context, id int64) error {
	spec, st, rev, err := c.Load(ctx, id)
	if err != nil {
		return err
	}
	rows, err := c.rowsFromKV(ctx, spec, st)
	if err != nil {
		return err
	}
	return c.write(ctx, spec, st, rev, rows, true)
}

// RunRepairs repairs every period until ctx ends.
func (c *Cache) RunRepairs(ctx context.Context, every time.Duration) error {
	return runEvery(ctx, every, func() {
		if c.Stale() == 0 {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if n := c.Repair(rctx); n > 0 {
			c.log.Info("cache entries repaired from JetStream", "jobs", n, "left", c.Stale())
		}
	})
}
