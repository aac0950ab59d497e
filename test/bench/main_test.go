package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// Every benchmark puts its headline figures in the table printed after the
// run: the figure, the physical limit measured in the same run on the same
// machine (and what that limit is), their ratio, the goal and whether it
// is met.

// row is one line of the table.
type row struct {
	measure, value, limit, ratio, goal, met string
}

// benchRow is a row and the benchmark that recorded it.
type benchRow struct {
	row
	bench string
}

// benchOrder is the order of the table, whatever order the benchmarks ran in.
var benchOrder = []string{
	"BenchmarkSubmit", "BenchmarkStartLatency", "BenchmarkJobsPerSecond", "BenchmarkWorkers124",
	"BenchmarkFanOut200", "BenchmarkRealAgents1000", "BenchmarkFanOut10kSimulated",
	"BenchmarkFileDistribution", "BenchmarkLogThroughput", "BenchmarkLogRead1M", "BenchmarkMemoryQueued",
	"BenchmarkBigJobsNoAgents", "BenchmarkBigJobsWithAgents", "BenchmarkServeRSS",
}

var (
	rowsMu sync.Mutex
	rows   []benchRow
)

// record adds a row of benchmark b; a row of the same measure (an earlier
// iteration) is replaced.
func record(b *testing.B, rr row) {
	r := benchRow{row: rr}
	r.bench, _, _ = strings.Cut(b.Name(), "/")
	rowsMu.Lock()
	defer rowsMu.Unlock()
	for i := range rows {
		if rows[i].measure == r.measure {
			rows[i] = r
			return
		}
	}
	rows = append(rows, r)
}

// machineCap is the most operations a second the machine could do if each
// needed the machine time of one op of each rate given (each measured
// alone at full concurrency, so its machine time a op is 1/rate): the sum
// of those times bounds one operation's from below, since an operation
// made of those parts does at least their work.
func machineCap(rates ...float64) float64 {
	var t float64
	for _, r := range rates {
		t += 1 / r
	}
	return 1 / t
}

// capped is the "met?" cell of a goal missed that the machine cannot meet:
// the cap, as a rate or ratio, and what it is made of.
func capped(met bool, cap, of string) string {
	if met {
		return metYes(true)
	}
	return fmt.Sprintf("NO (cap %s: %s)", cap, of)
}

// metYes turns a goal check into the table's "met?" cell.
func metYes(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

const noGoal = "—"

func printTable() {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	if len(rows) == 0 {
		return
	}
	rank := func(r benchRow) int {
		if i := slices.Index(benchOrder, r.bench); i >= 0 {
			return i
		}
		return len(benchOrder)
	}
	slices.SortStableFunc(rows, func(a, b benchRow) int { return rank(a) - rank(b) })
	fmt.Printf("\nfleetjob on this machine (%d CPUs, %s/%s, %s); every limit measured in the same run:\n\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(w, "measure\t fleetjob\t physical limit (what it is)\t ratio\t goal\t met?")
	fmt.Fprintln(w, "-------\t --------\t ---------------------------\t -----\t ----\t ----")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t %s\t %s\t %s\t %s\t %s\n", r.measure, r.value, r.limit, r.ratio, r.goal, r.met)
	}
	w.Flush()
	fmt.Println("\nratio is fleetjob ÷ limit: for a rate 1 is the limit and higher is better; for a time or a size",
		"(×) 1 is the limit and lower is better. Figures are from one run (-benchtime 1x) on a shared machine.")
	fmt.Println()
}

func TestMain(m *testing.M) {
	code := m.Run()
	printTable()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// The fleetjob binary, built once per run on first use.
var (
	binOnce sync.Once
	binDir  string
	binFile string
	binErr  error
)

// fleetjobBinary returns the path of the fleetjob binary, building it from
// this tree the first time.
func fleetjobBinary(b *testing.B) string {
	b.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "fleetjob-bench-bin-"); binErr != nil {
			return
		}
		binFile = filepath.Join(binDir, "fleetjob")
		build := exec.Command("go", "build", "-o", binFile, "../../cmd/fleetjob")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		binErr = build.Run()
	})
	if binErr != nil {
		b.Fatalf("build fleetjob: %v", binErr)
	}
	return binFile
}

// Helpers shared by the benchmarks.

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100 // nearest rank
	return s[max(0, min(len(s)-1, i-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// rate formats a per-second figure with thousands separators.
func rate(v float64, unit string) string {
	return thousands(int64(math.Round(v))) + " " + unit
}

func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func bytesStr(n float64) string {
	switch a := math.Abs(n); {
	case a >= 1<<30:
		return fmt.Sprintf("%.2f GiB", n/(1<<30))
	case a >= 1<<20:
		return fmt.Sprintf("%.2f MiB", n/(1<<20))
	case a >= 1<<10:
		return fmt.Sprintf("%.1f KiB", n/(1<<10))
	}
	return fmt.Sprintf("%.0f B", n)
}

// rawPublish is raw JetStream publish-with-ack of total messages of body
// from clients goroutines on the system's connection; it returns
// publishes per second.
func rawPublish(b *testing.B, s *testenv.System, subject string, body []byte, clients, total int) float64 {
	b.Helper()
	return perSecond(b, clients, total, func() error {
		_, err := s.JS.Publish(context.Background(), subject, body)
		return err
	})
}

// perSecond runs op total times from clients goroutines and returns how
// many ran per second; the first error fails the benchmark.
func perSecond(b *testing.B, clients, total int, op func() error) float64 {
	b.Helper()
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for n.Add(1) <= int64(total) {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(total) / time.Since(start).Seconds()
}

// spawnBash runs n `bash -c true` processes, par at a time, the way a bare
// Go program would, and returns how long it took.
func spawnBash(b *testing.B, n, par int) time.Duration {
	b.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range min(n, par) {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := exec.Command(bash, "-c", "true").Run(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

// waitFinal polls GET /v1/jobs/{id} until the job is final and returns
// its summary.
func waitFinal(b *testing.B, s *testenv.System, client *http.Client, id int64, timeout time.Duration) schemas.JobSummary {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var sum schemas.JobSummary
		code, err := getJSON(client, s, fmt.Sprintf("/v1/jobs/%d", id), &sum)
		if err != nil {
			b.Fatal(err)
		}
		if code == 200 && schemas.JobFinal(sum.Status) {
			return sum
		}
		if time.Now().After(deadline) {
			b.Fatalf("job %d not final after %s: %d %s %v", id, timeout, code, sum.Status, sum.Counts)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline, fine-grained: the wait is what is measured
	}
}

// getJSON sends GET path with the admin token and decodes a 200 answer.
func getJSON(client *http.Client, s *testenv.System, path string, out any) (int, error) {
	req, err := http.NewRequest("GET", s.APIURL+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+s.Token)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(out)
}

func runtimeCPUs() int { return runtime.NumCPU() }

// recordPercentiles reports a latency's p50 and p99 beside those of its
// floor, as metrics and as two table rows; measure holds one %s for "p50"
// or "p99", limit says what the floor is, goal99 is the p99 goal (0: none).
func recordPercentiles(b *testing.B, measure string, lat, floor []time.Duration, limit string, goal99 time.Duration) {
	for _, p := range []int{50, 99} {
		v, f := percentile(lat, p), percentile(floor, p)
		b.ReportMetric(ms(v), fmt.Sprintf("p%d-ms", p))
		b.ReportMetric(ms(f), fmt.Sprintf("floor-p%d-ms", p))
		goal, met := noGoal, noGoal
		if p == 99 && goal99 > 0 {
			goal, met = fmt.Sprintf("p99 <= %d ms", goal99.Milliseconds()), metYes(v <= goal99)
		}
		record(b, row{fmt.Sprintf(measure, fmt.Sprintf("p%d", p)), fmt.Sprintf("%.2f ms", ms(v)),
			fmt.Sprintf("%.2f ms (%s)", ms(f), limit), fmt.Sprintf("%.1f×", ms(v)/ms(f)), goal, met})
	}
}

// profileWindow starts a CPU profile of the measured part of benchmark b
// when FLEETJOB_BENCH_CPUPROFILE names a directory, and returns what stops
// it: <dir>/<benchmark>[-<part>].prof, for go tool pprof. The profile covers this
// process: the agents, workers, API and embedded NATS server of the
// benchmark's system (the worker processes of BenchmarkWorkers124 are not
// in it).
func profileWindow(b *testing.B, part string) func() {
	dir := os.Getenv("FLEETJOB_BENCH_CPUPROFILE")
	if dir == "" {
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	name := strings.NewReplacer("/", "-", "=", "").Replace(strings.TrimPrefix(b.Name(), "Benchmark"))
	if part != "" {
		name += "-" + part
	}
	f, err := os.Create(filepath.Join(dir, name+".prof"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Logf("no CPU profile: %v", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// idleCPU returns the CPU this process (embedded NATS, API, workers) used
// over d, in cores.
func idleCPU(b *testing.B, d time.Duration) float64 {
	b.Helper()
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	stop := profileWindow(b, "idle")
	defer stop()
	c0, t0 := cpu(), time.Now()
	time.Sleep(d) // on purpose: the window the CPU is measured over
	return (cpu() - c0).Seconds() / time.Since(t0).Seconds()
}

// timeline prints, every 50 ms until the returned func is called, the last
// sequence of each of fleetjob's streams, when FLEETJOB_BENCH_TIMELINE is
// set: where a window's time goes (dispatch, answers, folding, events).
func timeline(s *testenv.System) func() {
	if os.Getenv("FLEETJOB_BENCH_TIMELINE") == "" {
		return func() {}
	}
	start, done := time.Now(), make(chan struct{})
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			var parts []string
			for _, name := range []string{schemas.StreamJobs, schemas.StreamTasks, schemas.StreamResults, schemas.StreamEvents, "KV_" + schemas.BucketJobs} {
				if str, err := s.JS.Stream(context.Background(), name); err == nil {
					if i, err := str.Info(context.Background()); err == nil {
						parts = append(parts, fmt.Sprintf("%s=%d", name, i.State.LastSeq))
					}
				}
			}
			fmt.Printf("timeline %5dms %s\n", time.Since(start).Milliseconds(), strings.Join(parts, " "))
		}
	}()
	return func() { close(done) }
}
