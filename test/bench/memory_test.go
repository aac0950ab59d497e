package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// memSnap is what the system holds: JetStream's file store (on disk) and
// memory store (as the account reports them), Redis's used_memory, and the
// live Go heap of the test process after a GC (the embedded NATS server,
// API, workers and their caches all live there).
type memSnap struct {
	disk, jsMem, redis, heap float64
}

// ram is what the snapshot holds in memory.
func (m memSnap) ram() float64 { return m.jsMem + m.redis + m.heap }

func snapshot(b *testing.B, s *testenv.System) memSnap {
	b.Helper()
	ctx := context.Background()
	ai, err := s.JS.AccountInfo(ctx)
	if err != nil {
		b.Fatal(err)
	}
	info, err := s.RDB.Info(ctx, "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	var used float64
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
			used, _ = strconv.ParseFloat(v, 64)
		}
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return memSnap{disk: float64(ai.Store), jsMem: float64(ai.Memory), redis: used, heap: float64(ms.HeapAlloc)}
}

// heapProfile writes a heap profile to FLEETJOB_BENCH_HEAPPROFILE's file
// plus suffix, when it is set: where the heap went between the two
// snapshots is go tool pprof -sample_index=inuse_space -base <file>.base <file>.
func heapProfile(b *testing.B, suffix string) {
	f := os.Getenv("FLEETJOB_BENCH_HEAPPROFILE")
	if f == "" {
		return
	}
	out, err := os.Create(f + suffix)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	if err := pprof.WriteHeapProfile(out); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkMemoryQueued measures what queued jobs cost: one-host `true`
// jobs for a host whose agent never comes (agent_wait 3600 s, so they stay
// waiting for it), submitted by 64 clients and taken by two in-process
// workers. 5,000 jobs first warm the system up (connections, pools, the
// store's block buffers, the workers' spec cache filled to its bound: what
// is there whatever the queue's length); the figure is the growth while
// 20,000 more are queued, per 1,000 jobs, of memory: Redis used_memory +
// live Go heap + JetStream memory storage (see memSnap), each snapshot
// taken once the workers have taken every command and the API lists every
// job, and the system has rested 12 s (see rest). The JetStream file
// store's growth, on disk, is its own row. Beside them is what those jobs
// amount to: the bytes of their request bodies.
// With FLEETJOB_BENCH_HEAPPROFILE=<file> it writes a heap profile at the
// second snapshot.
func BenchmarkMemoryQueued(b *testing.B) {
	// with 5,000 jobs measured and no rest the heap's share moved 0.4-1.2
	// MiB per 1,000 between make bench runs: block caches of the NATS
	// server (8 MiB a block) loaded or not at a snapshot. Rested, over
	// 20,000, it held at 0.47 MiB.
	const clients, warm, jobs = 64, 5000, 20000
	s := testenv.Start(b, testenv.Options{Workers: 2})
	body, _ := json.Marshal(map[string]any{
		"name": "bench-queued", "targets": []string{"10.250.0.1"}, "agent_wait": schemas.MaxAgentWait,
		"steps": []any{map[string]any{"script": map[string]any{"content": "true"}}},
	})
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	client := &http.Client{Transport: tr}
	queued := 0
	queue := func(jobs int) {
		var n atomic.Int64
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				for n.Add(1) <= int64(jobs) {
					if _, err := post(client, s, body); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		queued += jobs
		// every command taken and acknowledged by a worker, every job listed
		ctx := context.Background()
		testenv.Eventually(b, 2*time.Minute, func() bool {
			c, err := s.JS.Consumer(ctx, schemas.StreamJobs, schemas.ConsumerCommands)
			if err != nil {
				return false
			}
			ci, err := c.Info(ctx)
			return err == nil && ci.NumPending == 0 && ci.NumAckPending == 0
		}, "workers took every submit")
		var list struct {
			Total int `json:"total"`
		}
		testenv.Eventually(b, time.Minute, func() bool {
			code, err := getJSON(http.DefaultClient, s, "/v1/jobs?page=1&size=1", &list)
			return err == nil && code == 200 && list.Total >= queued
		}, "every job listed")
	}
	// on purpose: each snapshot is taken at rest, once the NATS server has
	// let go of the block caches of the writes just made (it keeps one
	// 10 s after its last use, 8 MiB a block, and its buffer pools empty
	// at the next GCs), so what queued jobs cost while they wait is
	// measured, not which blocks the last submissions happened to load
	rest := func() { time.Sleep(12 * time.Second) }
	for b.Loop() {
		queue(warm)
		rest()
		before := snapshot(b, s)
		heapProfile(b, ".base")
		queue(jobs)
		rest()
		after := snapshot(b, s)
		heapProfile(b, "")
		var sum schemas.JobSummary
		if _, err := getJSON(http.DefaultClient, s, fmt.Sprintf("/v1/jobs/%d", jobs/2), &sum); err != nil {
			b.Fatal(err)
		}
		b.Logf("a queued job reads %s %v", sum.Status, sum.Counts)

		per := func(v float64) float64 { return v / jobs * 1000 }
		ram := per(after.ram() - before.ram())
		mem, rd, hp := per(after.jsMem-before.jsMem), per(after.redis-before.redis), per(after.heap-before.heap)
		disk := per(after.disk - before.disk)
		spec := per(float64(len(body) * jobs))
		b.ReportMetric(ram, "B/1000-queued")
		b.ReportMetric(disk, "B-disk/1000")
		b.ReportMetric(rd, "B-redis/1000")
		b.ReportMetric(hp, "B-go-heap/1000")
		record(b, row{"memory per 1,000 queued jobs (Redis + Go heap + JetStream memory storage)",
			fmt.Sprintf("%s (Redis %s, heap %s, JS memory %s)", bytesStr(ram), bytesStr(rd), bytesStr(hp), bytesStr(mem)),
			bytesStr(spec) + " (the 1,000 request bodies)", fmt.Sprintf("%.0f×", ram/spec), "<= 2 MiB", metYes(ram <= 2<<20)})
		record(b, row{"… JetStream file store per 1,000 queued jobs (disk: command, state, events)",
			bytesStr(disk), bytesStr(spec) + " (the 1,000 request bodies)", fmt.Sprintf("%.0f×", disk/spec), noGoal, noGoal})

		// what the waiting jobs cost while nothing happens: the sweeper
		// looks at every active job each second
		// on purpose: the sweeper's first look at the last jobs queued is
		// not idleness; let it pass
		time.Sleep(3 * time.Second)
		stop := profileWindow(b, "idle")
		idle := idleCPU(b, 5*time.Second)
		stop()
		b.ReportMetric(idle, "idle-cores")
		record(b, row{fmt.Sprintf("idle CPU with %s jobs waiting for an agent", thousands(int64(queued))),
			fmt.Sprintf("%.3f cores", idle), "0 (nothing is happening)", noGoal, noGoal, noGoal})
	}
}
