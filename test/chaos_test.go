package test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// The fault-injection cases (make chaos). Each prints what it counted.

// Case 8: 200 concurrent submissions with one idempotency key make exactly
// one job, and every caller is told its id.
func TestChaosConcurrentIdempotentSubmissions(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 2, Agents: []string{"i1=127.0.1.201"}})
	l := newLedger(t)
	body := script(l.append("ran"), "127.0.1.201")
	before := s.CommandCount(t)
	const n = 200
	ids := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var out api.SubmitResponse
			if code := s.JSON(t, "POST", "/v1/jobs", body, map[string]string{"Idempotency-Key": "storm-1"}, &out); code != 202 {
				t.Errorf("submit %d: %d", i, code)
			}
			ids[i] = out.ID
		})
	}
	wg.Wait()
	distinct := map[int64]int{}
	for _, id := range ids {
		distinct[id]++
	}
	if len(distinct) != 1 {
		t.Fatalf("%d submissions made jobs %v, want one", n, distinct)
	}
	sum := waitJob(t, s, ids[0], 20*time.Second)
	var list struct{ Total int }
	s.JSON(t, "GET", "/v1/jobs", nil, nil, &list)
	runs := len(l.lines(t))
	t.Logf("case 8: %d submissions → %d distinct id, %d command(s) stored, %d job(s) listed, script ran %d time(s), job %s",
		n, len(distinct), s.CommandCount(t)-before, list.Total, runs, sum.Status)
	if list.Total != 1 || runs != 1 || s.CommandCount(t)-before != 1 {
		t.Errorf("want exactly one job, one command and one run")
	}
}

// Case 6: Redis stalled (CLIENT PAUSE) and then flushed: job and host reads
// keep answering from JetStream within their timeouts, and the cache
// rebuilds once Redis is back.
func TestChaosRedisStalledAndFlushed(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"r1=127.0.1.202"}})
	id := submit(t, s, script("echo before", "127.0.1.202"), nil)
	waitJob(t, s, id, 20*time.Second)
	ctx := context.Background()
	if err := s.RDB.Do(ctx, "CLIENT", "PAUSE", "4000", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sum := job(t, s, id)
	rows := hosts(t, s, id)
	stalled := time.Since(start)
	if sum.Status != schemas.JobSuccess || len(rows) != 1 || rows[0].Status != schemas.HostSuccess {
		t.Errorf("reads during the stall: %s %+v", sum.Status, rows)
	}
	if stalled > 3500*time.Millisecond {
		t.Errorf("reads during a stall took %s; they should fall back to JetStream well before it ends", stalled)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return s.RDB.Ping(ctx).Err() == nil }, "redis back")
	s.RDB.FlushAll(ctx)
	next := submit(t, s, script("echo after", "127.0.1.202"), nil)
	waitJob(t, s, next, 20*time.Second)
	var list struct {
		Items []schemas.JobSummary
		Total int
	}
	s.JSON(t, "GET", "/v1/jobs?order=asc", nil, nil, &list)
	n, _ := s.RDB.Exists(ctx, fmt.Sprintf("{fj}:job:%d", id)).Result()
	t.Logf("case 6: reads answered in %s during a 4 s pause; after FLUSHALL the list has %d jobs, job %d cached again: %v",
		stalled.Round(time.Millisecond), list.Total, id, n == 1)
	if list.Total != 2 || list.Items[0].ID != id || n != 1 {
		t.Errorf("cache not rebuilt after the flush: %+v", list)
	}
}
