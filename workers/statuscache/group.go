package statuscache

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Writes of committed states are group-committed: while one pipeline is
// on its way to Redis, the writes that arrive meanwhile wait and go
// together in the next one. An idle cache sends each write at once; a busy
// one sends one round trip for many jobs instead of one per job. A caller
// still returns only once its own write is done, so it can publish the
// events that describe the state after the cache holds it.
//
// Small writes and large ones go in two lanes, each with its own group:
// a one-host job's write does not wait behind a group of 200,000 host rows
// (ten big jobs expiring their hosts). Redis takes the lanes' commands
// interleaved, the large lane's rows in scripts of rowsPerScript, so the
// small lane waits for one script at most. Writes of one job may then land
// out of order; each carries its revision and an older one never replaces
// a newer one (putJob, putHosts).

type pendingWrite struct {
	build func(redis.Pipeliner)
	rows  int
	done  chan error
}

type writeGroup struct {
	mu      sync.Mutex
	pending []pendingWrite
	running bool
}

// maxGroup bounds the writes of one pipeline.
const maxGroup = 256

// largeWrite is where a write goes to the large lane: more host rows than
// a small job has.
const largeWrite = 64

// lanes are the cache's two write groups: small writes and large ones.
type lanes struct{ small, large writeGroup }

func (l *lanes) of(rows int) *writeGroup {
	if rows > largeWrite {
		return &l.large
	}
	return &l.small
}

// runGrouped runs build in a shared pipeline and returns that pipeline's
// error.
func (c *Cache) runGrouped(ctx context.Context, rows int, build func(redis.Pipeliner)) error {
	done := make(chan error, 1)
	g := c.lanes.of(rows)
	g.mu.Lock()
	g.pending = append(g.pending, pendingWrite{build, rows, done})
	if !g.running {
		g.running = true
		go c.flushGroups(g)
	}
	g.mu.Unlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Cache) flushGroups(g *writeGroup) {
	for {
		g.mu.Lock()
		n := min(len(g.pending), maxGroup)
		batch := g.pending[:n:n]
		g.pending = g.pending[n:]
		if n == 0 {
			g.pending, g.running = nil, false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		// 5 s, and a second more per 5,000 host rows: ten 20,000-host
		// jobs ending in one group are 200,000 rows
		rows := 0
		for _, w := range batch {
			rows += w.rows
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second+time.Duration(rows/5000)*time.Second)
		err := c.run(ctx, func(pipe redis.Pipeliner) {
			for _, w := range batch {
				w.build(pipe)
			}
		})
		cancel()
		for _, w := range batch {
			w.done <- err
		}
	}
}
