package main

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// The in-process Redis forgets the key names of deleted keys: miniredis
// keeps a version of each for WATCH, which fleetjob does not use.
func TestMiniredisForgetsKeyVersions(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	for i := range 100 {
		k := fmt.Sprintf("{fj}:job:%d", i)
		rdb.HSet(ctx, k, "v", "x")
		rdb.Del(ctx, k)
	}
	rdb.Set(ctx, "kept", "1", 0)
	if n := keyVersionsLen(mr); n < 100 {
		t.Fatalf("%d key versions before, want the 101 names written (is the field still there?)", n)
	}
	if _, _, ok := forgetKeyVersions(mr); !ok {
		t.Fatal("miniredis's key versions are out of reach: its layout changed, see miniredis.go")
	}
	if n := keyVersionsLen(mr); n != 0 {
		t.Fatalf("%d key versions after, want 0", n)
	}
	if v, err := rdb.Get(ctx, "kept").Result(); err != nil || v != "1" {
		t.Fatalf("a live key after: %q %v", v, err)
	}
	rdb.Set(ctx, "kept", "2", 0) // and writing goes on
	if v, _ := rdb.Get(ctx, "kept").Result(); v != "2" {
		t.Fatalf("a write after: %q", v)
	}
}

// keyVersionsLen is how many key versions db 0 holds (-1: unknown).
func keyVersionsLen(mr *miniredis.Miniredis) int {
	db := mr.DB(0)
	mr.Lock()
	defer mr.Unlock()
	f, ok := keyVersions(db)
	if !ok {
		return -1
	}
	return f.Len()
}

// After a burst the cache trimmed, the in-process Redis's memory goes
// back to what the jobs it keeps take: its maps are copied at their size
// once as many keys were written as it holds, when a minute was quiet.
// (A heap reading, not a timing: both figures are measured here, after
// collections.)
func TestMiniredisMapsShrinkAfterChurn(t *testing.T) {
	const keep = 10_000
	base := heapAfterGC()
	fresh := miniredis.RunT(t)
	cacheJobs(t, fresh, 0, keep)
	freshHeap := heapAfterGC().minus(base)
	fresh.Close()

	base = heapAfterGC()
	mr := miniredis.RunT(t)
	cacheJobs(t, mr, 0, 4*keep)
	evictJobs(t, mr, 0, 3*keep)
	written := 0
	tidy(mr, &written) // at the end of the busy minute: not yet
	if written == 0 {
		t.Fatal("compacted at the end of a busy minute")
	}
	start := time.Now()
	tidy(mr, &written) // a quiet minute later
	took := time.Since(start)
	if written != 0 {
		t.Fatalf("not compacted after a quiet minute (%d keys written since the last)", written)
	}
	if _, _, ok := forgetKeyVersions(mr); !ok {
		t.Fatal("miniredis's layout changed, see miniredis.go")
	}
	churnedHeap := heapAfterGC().minus(base)
	t.Logf("%d jobs written afresh: %.1f MB in spans of %.1f MB; after %d written and %d trimmed, tidied (in %s, the server locked): %.1f MB in spans of %.1f MB",
		keep, freshHeap.objects/(1<<20), freshHeap.spans/(1<<20), 4*keep, 3*keep, took.Round(time.Millisecond), churnedHeap.objects/(1<<20), churnedHeap.spans/(1<<20))
	if churnedHeap.objects > 1.25*freshHeap.objects {
		t.Errorf("the in-process Redis holds %.1f MB for %d jobs after churn, %.1f MB when written afresh", churnedHeap.objects/(1<<20), keep, freshHeap.objects/(1<<20))
	}
	// what is kept was written among what was trimmed: uncopied, it would
	// keep most of the burst's spans in use
	if churnedHeap.spans > 1.25*freshHeap.spans {
		t.Errorf("the in-process Redis's %d jobs occupy %.1f MB of spans after churn, %.1f MB when written afresh", keep, churnedHeap.spans/(1<<20), freshHeap.spans/(1<<20))
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	if n, err := rdb.ZCard(ctx, "{fj}:jobs").Result(); err != nil || n != keep {
		t.Fatalf("jobs listed after compaction: %d %v, want %d", n, err, keep)
	}
	if v, err := rdb.Get(ctx, fmt.Sprintf("{fj}:job:%d", 4*keep-1)).Result(); err != nil || !strings.HasPrefix(v, fmt.Sprintf("%d|4|", 4*keep-1)) {
		t.Fatalf("a job after compaction: %q %v", v, err)
	}
	if v, err := rdb.HGet(ctx, fmt.Sprintf("{fj}:hosts:%d", 4*keep-1), "_complete").Result(); err != nil || v != "1" {
		t.Fatalf("a job's hosts after compaction: %q %v", v, err)
	}
	if err := rdb.ZAdd(ctx, "{fj}:jobs", redis.Z{Score: 1, Member: "1"}).Err(); err != nil {
		t.Fatalf("a write after compaction: %v", err)
	}
}

func heapAfterGC() heapRead {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return heapRead{objects: float64(m.HeapAlloc), spans: float64(m.HeapInuse)}
}

// heapRead is the heap's live objects and the memory spans they occupy
// (in use: what the process cannot give back).
type heapRead struct{ objects, spans float64 }

func (h heapRead) minus(o heapRead) heapRead {
	return heapRead{h.objects - o.objects, h.spans - o.spans}
}

// jobKeys are the keys the status cache writes for a finished one-host job.
func jobKeys(id int) (job, hosts string, sets []string) {
	return fmt.Sprintf("{fj}:job:%d", id), fmt.Sprintf("{fj}:hosts:%d", id),
		[]string{"{fj}:jobs", "{fj}:jobs:upd", "{fj}:jobs:st:success", "{fj}:jobs:name:bench", fmt.Sprintf("{fj}:hostjobs:0:10.0.%d.%d", id/256%4, id%256)}
}

// cacheJobs writes jobs [from, to) as the status cache does (a summary, a
// hash of host rows, five sorted sets).
func cacheJobs(t *testing.T, mr *miniredis.Miniredis, from, to int) {
	pipeline(t, mr, from, to, func(p redis.Pipeliner, id int) {
		job, hosts, sets := jobKeys(id)
		// each job's own summary and row, as the cache's are
		summary := fmt.Sprintf("%d|4|%s", id, strings.Repeat("s", 480))
		row := fmt.Sprintf("%d|4|1796293783965826223|1|0|:10.0.0.1|%s", id, strings.Repeat("r", 100))
		p.Set(context.Background(), job, summary, 0)
		p.HSet(context.Background(), hosts, ":10.0.0.1", row, "_complete", "1")
		for _, z := range sets {
			p.ZAdd(context.Background(), z, redis.Z{Score: float64(id), Member: id})
		}
	})
}

// evictJobs removes jobs [from, to) as the cache's trimmer does.
func evictJobs(t *testing.T, mr *miniredis.Miniredis, from, to int) {
	pipeline(t, mr, from, to, func(p redis.Pipeliner, id int) {
		job, hosts, sets := jobKeys(id)
		p.Del(context.Background(), job, hosts)
		for _, z := range sets {
			p.ZRem(context.Background(), z, id)
		}
	})
}

func pipeline(t *testing.T, mr *miniredis.Miniredis, from, to int, each func(redis.Pipeliner, int)) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	for i := from; i < to; i += 500 {
		p := rdb.Pipeline()
		for id := i; id < min(i+500, to); id++ {
			each(p, id)
		}
		if _, err := p.Exec(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
