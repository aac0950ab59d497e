package bench

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
)

// BenchmarkServeRSS measures what 100,000 finished jobs leave in the
// resident memory of the all-in-one server: the real binary's `fleetjob
// serve` (embedded NATS, in-process Redis, API, two workers; --no-agent)
// runs as a child process on free ports in a temp data dir, with 1,000
// simulated agents beside it (`fleetjob agent --simulate`, enrolled with
// a simulator token: serve itself has no simulator setting). After 2,000
// one-host `true` jobs warm it up, its VmRSS is read; then 64 clients
// submit 100,000 more and the RSS is read again once all are final, the
// status cache has trimmed what it keeps of finished jobs (10 s period) and
// the process has idled: each reading is the least of five, a second apart,
// after 3 minutes of rest, once what the NATS server keeps for 2 minutes
// after the last write is gone (restingRSS; a GC cannot be forced from
// outside), and 35 s after the work as well, in a row without a goal.
// FLEETJOB_BENCH_SERVE_WATCH=<duration> logs the RSS every 30 s after
// that. It also reports
// the submission rate through serve, and (from its /metrics) about
// what its Go heap held at its last GC. FLEETJOB_BENCH_SERVE_ARGS adds serve
// flags, e.g. --cache-keep-finished 1000000 to see what the cache's bound
// saves; FLEETJOB_BENCH_SERVE_JOBS another number of jobs than 100,000.
// FLEETJOB_BENCH_SERVE_HEAPPROFILE=<file> saves serve's heap
// profiles at both readings (serveHeap).
func BenchmarkServeRSS(b *testing.B) {
	// 100,000 jobs, the figure: serve finishes ~2,200-2,500
	// one-host jobs/s on 2 shared cores since the in-process Redis runs
	// the cache's scripts in Go (430-1,300 before), so the work takes
	// under a minute; the run's ~8 minutes are its two 3-minute rests.
	const clients, warm, sims = 64, 2000, 1000
	jobs := 100_000
	if n, err := strconv.Atoi(os.Getenv("FLEETJOB_BENCH_SERVE_JOBS")); err == nil && n > 0 {
		jobs = n
	}
	// the in-process status cache's default bound (redis.keep_finished)
	const keepFinished = 10_000
	bin := fleetjobBinary(b)
	dir := b.TempDir()
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b))
	natsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b))
	extra := strings.Fields(os.Getenv("FLEETJOB_BENCH_SERVE_ARGS"))
	// empty values count as unset: in-process Redis, a generated token, no config file
	env := []string{"REDIS_URL=", "FLEETJOB_TOKEN=", "FLEETJOB_CONFIG=", "FLEETJOB_LOG_LEVEL=warn"}
	heapFile, pprofAddr := os.Getenv("FLEETJOB_BENCH_SERVE_HEAPPROFILE"), ""
	if heapFile != "" {
		pprofAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b))
		env = append(env, "FLEETJOB_PPROF_ADDR="+pprofAddr)
	}
	pid := startProc(b, env, append([]string{bin, "serve", "--data-dir", dir, "--http-addr", httpAddr,
		"--nats-addr", natsAddr, "--no-agent"}, extra...)...)
	s := &testenv.System{APIURL: "http://" + httpAddr}
	s.WaitReady(b, time.Minute)
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		b.Fatal(err)
	}
	s.Token = strings.TrimSpace(string(tok))

	// the simulator, enrolled like any load simulator
	first := netip.MustParseAddr("10.240.0.1")
	enrol := exec.Command(bin, "enrolment", "create", "--api", s.APIURL, "--simulator", "--agent-id", "simserve",
		"--range", fmt.Sprintf("0:%s-%s", first, agent.SimulatedIP(first, sims-1)))
	enrol.Env = append(os.Environ(), "FLEETJOB_TOKEN="+s.Token)
	out, err := enrol.Output()
	if err != nil {
		b.Fatalf("enrolment create: %v", err)
	}
	startProc(b, []string{"NATS_URL=nats://" + natsAddr, "FLEETJOB_LOG_LEVEL=warn"}, bin, "agent",
		"--simulate", fmt.Sprint(sims), "--sim-pool", "simserve", "--sim-first-ip", first.String(),
		"--data-dir", b.TempDir(), "--enrol", s.APIURL, "--token", strings.TrimSpace(string(out)))
	testenv.Eventually(b, time.Minute, func() bool {
		return listTotal(s, "/v1/agents?online=true&size=1") >= sims
	}, "%d simulated agents online", sims)
	bodies := make([][]byte, sims)
	for i, ip := 0, first; i < sims; i, ip = i+1, ip.Next() {
		bodies[i] = jobBody(ip.String())
	}

	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	defer tr.CloseIdleConnections()
	// submit has the clients submit n jobs and returns their ids, by
	// submission order, and the submissions per second
	submit := func(n int) ([]int64, float64) {
		ids := make([]int64, n)
		var next atomic.Int64
		rate := perSecond(b, clients, n, func() error {
			i := next.Add(1) - 1
			id, err := post(client, s, bodies[i%sims])
			ids[i] = id
			return err
		})
		if b.Failed() {
			b.FailNow()
		}
		return ids, rate
	}
	for b.Loop() {
		ids, _ := submit(warm)
		allFinal(b, client, s, ids)
		beforeSoon, before := restingRSS(b, pid)
		liveBefore := liveHeap(b, s)
		logServeMemory(b, s, "after the warm-up")
		serveHeap(b, pprofAddr, heapFile+".base")
		start := time.Now()
		ids, subs := submit(jobs)
		allFinal(b, client, s, ids)
		el := time.Since(start)
		// what the cache lists of finished jobs, once its trimmer has run
		// (with serve flags of its own the bound may be another)
		listed := 0
		testenv.Eventually(b, time.Minute, func() bool {
			listed = statusTotal(s, schemas.JobFinal)
			return listed >= 0 && (listed <= keepFinished || len(extra) > 0)
		}, "the status cache trimmed to %d finished jobs", keepFinished)
		afterSoon, after := restingRSS(b, pid)
		liveAfter := liveHeap(b, s)
		logServeMemory(b, s, "after the work")
		serveHeap(b, pprofAddr, heapFile)
		watchServe(b, s, pid)

		x := float64(after) / float64(before)
		b.ReportMetric(float64(after)/(1<<20), "MiB-rss-after")
		b.ReportMetric(float64(before)/(1<<20), "MiB-rss-before")
		b.ReportMetric(subs, "submits/s")
		b.ReportMetric(float64(jobs)/el.Seconds(), "jobs/s")
		b.ReportMetric(liveAfter/(1<<20), "MiB-live-heap-after")
		record(b, row{fmt.Sprintf("RSS of `fleetjob serve` after %s finished one-host jobs; "+
			"the status cache lists %s of them (redis.keep_finished)", thousands(int64(jobs)), thousands(int64(listed))),
			fmt.Sprintf("%s (live heap ≈ %s)", bytesStr(float64(after)), bytesStr(liveAfter)),
			fmt.Sprintf("%s (live heap ≈ %s): its RSS after 2,000 warm-up jobs, read the same way", bytesStr(float64(before)), bytesStr(liveBefore)),
			fmt.Sprintf("%.2f×", x), "<= 1.5×", metYes(x <= 1.5)})
		record(b, row{"… the same, read 35 s after the work (the time-bounded windows still hold)",
			bytesStr(float64(afterSoon)), bytesStr(float64(beforeSoon)) + ": after the warm-up, read the same way",
			fmt.Sprintf("%.2f×", float64(afterSoon)/float64(beforeSoon)), noGoal, noGoal})
		record(b, row{"… submissions through serve meanwhile, 64 clients", rate(subs, "/s"),
			fmt.Sprintf("— (submit → all %s final: %s)", thousands(int64(jobs)), rate(float64(jobs)/el.Seconds(), "jobs/s")),
			noGoal, noGoal, noGoal})
	}
}

// logServeMemory logs where serve's memory is at rest, from its
// /metrics: heap objects beside the spans that hold them (the gap is
// fragmentation), what the heap holds unused, stacks and the runtime's own.
func logServeMemory(b *testing.B, s *testenv.System, when string) {
	b.Helper()
	mib := func(name string) float64 { return serveMetric(b, s, name) / (1 << 20) }
	b.Logf("serve at rest %s: heap objects %.1f MiB in spans of %.1f MiB, idle %.1f MiB of which released %.1f MiB, stacks %.1f MiB, other runtime %.1f MiB",
		when, mib("go_memstats_heap_alloc_bytes"), mib("go_memstats_heap_inuse_bytes"), mib("go_memstats_heap_idle_bytes"),
		mib("go_memstats_heap_released_bytes"), mib("go_memstats_stack_inuse_bytes"),
		mib("go_memstats_sys_bytes")-mib("go_memstats_heap_sys_bytes")-mib("go_memstats_stack_sys_bytes"))
}

// allFinal waits (up to five minutes) until every job of ids is final:
// first the last ones submitted, then no job is listed in a status that is
// not final (every accepted job is listed from its submission on, and the
// trimmer evicts only finished ones); a few are read back as successes.
func allFinal(b *testing.B, client *http.Client, s *testenv.System, ids []int64) {
	b.Helper()
	for _, id := range ids[max(0, len(ids)-64):] {
		if err := finalWithin(client, s, id, 5*time.Minute, 100*time.Millisecond); err != nil {
			b.Fatal(err)
		}
	}
	testenv.Eventually(b, 5*time.Minute, func() bool {
		return statusTotal(s, func(st string) bool { return !schemas.JobFinal(st) }) == 0
	}, "no job listed as active")
	for _, id := range []int64{ids[0], ids[len(ids)/2], ids[len(ids)-1]} {
		var sum schemas.JobSummary
		if code, err := getJSON(client, s, fmt.Sprintf("/v1/jobs/%d", id), &sum); err != nil || code != 200 || sum.Status != schemas.JobSuccess {
			b.Fatalf("job %d: %d %v %s %v, want success", id, code, err, sum.Status, sum.Counts)
		}
	}
}

// statusTotal is how many jobs are listed in the statuses that which
// picks, or -1 when a list does not answer.
func statusTotal(s *testenv.System, which func(status string) bool) int {
	n := 0
	for _, st := range schemas.JobStatuses {
		if !which(st) {
			continue
		}
		v := listTotal(s, "/v1/jobs?size=1&status="+st)
		if v < 0 {
			return -1
		}
		n += v
	}
	return n
}

// serveHeap saves serve's heap profile (after a GC) to file, when its
// profiles are served (FLEETJOB_BENCH_SERVE_HEAPPROFILE): what the run
// added is go tool pprof -sample_index=inuse_space -base <file>.base <file>.
func serveHeap(b *testing.B, addr, file string) {
	b.Helper()
	if addr == "" {
		return
	}
	resp, err := http.Get("http://" + addr + "/debug/pprof/heap?gc=1")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("heap profile: %d %v", resp.StatusCode, err)
	}
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		b.Fatal(err)
	}
}

// liveHeap is what the server's Go heap held at its last GC: its heap
// goal over 1 + GOGC/100 (memtrim lowers GOGC while serve is idle).
func liveHeap(b *testing.B, s *testenv.System) float64 {
	return serveMetric(b, s, "go_memstats_next_gc_bytes") / (1 + serveMetric(b, s, "go_gc_gogc_percent")/100)
}

// serveMetric reads a metric without labels from the API's /metrics.
func serveMetric(b *testing.B, s *testenv.System, name string) float64 {
	b.Helper()
	resp, err := http.Get(s.APIURL + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				b.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	b.Fatalf("no metric %s at %s/metrics", name, s.APIURL)
	return 0
}

// listTotal is the total of a list endpoint, or -1 when it does not answer.
func listTotal(s *testenv.System, path string) int {
	var out struct {
		Total int `json:"total"`
	}
	if code, err := getJSON(http.DefaultClient, s, path, &out); err != nil || code != 200 {
		return -1
	}
	return out.Total
}

// watchServe logs serve's RSS and heap every 30 s for as long as
// FLEETJOB_BENCH_SERVE_WATCH says (e.g. 12m): what memory the time-bounded
// windows (duplicate windows, the file store's per-block subject state)
// hold and when they let it go.
func watchServe(b *testing.B, s *testenv.System, pid int) {
	d, err := time.ParseDuration(os.Getenv("FLEETJOB_BENCH_SERVE_WATCH"))
	if err != nil || d <= 0 {
		return
	}
	for start := time.Now(); time.Since(start) < d; {
		time.Sleep(30 * time.Second) // on purpose: a reading every 30 s
		fmt.Fprintf(os.Stderr, "serve +%s: RSS %.1f MiB, heap objects %.1f MiB in spans of %.1f MiB\n", time.Since(start).Round(time.Second),
			float64(procStatusOf(b, fmt.Sprint(pid), "VmRSS"))/(1<<20),
			serveMetric(b, s, "go_memstats_heap_alloc_bytes")/(1<<20), serveMetric(b, s, "go_memstats_heap_inuse_bytes")/(1<<20))
	}
}

// restingRSS is the resident memory of process pid at rest, read twice:
// soon (after 35 s without work) and settled (after 3 min), each the
// least of five readings a second apart.
//
// The soon reading is longer than the JetStream server keeps an idle
// block's cache (10 s) and than serve takes to give a burst's memory back
// twice (debug.release_memory, 10 s: the first quiet look, then one
// more). The settled one is past what the server keeps for a time after
// the last write and then lets go: the task and result streams' message
// ids (topology WorkDedupe, 2 min), the events' (2 min), and each message
// block's per-subject state (2 min idle); memtrim's quiet look at 160 s
// gives that memory back.
func restingRSS(b *testing.B, pid int) (soon, settled uint64) {
	b.Helper()
	start := time.Now()
	soon = leastRSS(b, pid, 35*time.Second)
	settled = leastRSS(b, pid, 3*time.Minute-time.Since(start))
	return soon, settled
}

// leastRSS sleeps rest, then returns the least of five readings of pid's
// VmRSS a second apart.
func leastRSS(b *testing.B, pid int, rest time.Duration) uint64 {
	time.Sleep(rest) // on purpose: the rest the reading is taken after
	var least uint64
	for i := range 5 {
		if i > 0 {
			time.Sleep(time.Second) // on purpose: readings a second apart
		}
		if v := procStatusOf(b, fmt.Sprint(pid), "VmRSS"); i == 0 || v < least {
			least = v
		}
	}
	return least
}
