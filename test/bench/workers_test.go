package bench

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// startWorkerProc runs `fleetjob worker --workers 1` (the real binary,
// built for this run) against the system; it is killed at cleanup, and its
// output is printed if the benchmark fails.
func startWorkerProc(b *testing.B, s *testenv.System) int {
	b.Helper()
	logf, err := os.CreateTemp(b.TempDir(), "worker-*.log")
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(fleetjobBinary(b), "worker", "--workers", "1")
	cmd.Env = append(os.Environ(), "NATS_URL="+s.NATSURL, "REDIS_URL="+s.RedisURL, "FLEETJOB_LOG_LEVEL=warn",
		"FLEETJOB_NATS_CREDS="+s.NATS.CredsFile(b, natsauth.RoleWorker))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	b.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if b.Failed() {
			out, _ := os.ReadFile(logf.Name())
			b.Logf("worker output:\n%s", out)
		}
	})
	return cmd.Process.Pid
}

// cpuSeconds is the CPU time (user + system) a process has used, from
// /proc/<pid>/stat (clock ticks of 1/100 s, as on every Linux build Go
// supports), or of this process when pid is 0.
func cpuSeconds(b *testing.B, pid int) float64 {
	b.Helper()
	if pid == 0 {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	sy, _ := strconv.ParseFloat(f[12], 64)
	return (ut + sy) / 100
}

// BenchmarkWorkers124 measures single-host jobs per second (as
// BenchmarkJobsPerSecond: 64 clients, 5,000 jobs, 1,000 simulated agents)
// with 1, 2 and 4 worker processes of the real binary (`fleetjob worker
// --workers 1` each); the API, NATS, Redis and the simulator are as in the
// other benchmarks. Each count gets a fresh system, and beside each figure
// is raw JetStream publish-with-ack (64 clients) in that system. It also
// reports the CPU cores the worker processes and this process kept busy
// while the jobs ran, to tell a worker bottleneck from a saturated machine.
func BenchmarkWorkers124(b *testing.B) {
	fleetjobBinary(b) // built before anything is timed
	jps := map[int]float64{}
	for _, k := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("procs=%d", k), func(b *testing.B) {
			s := testenv.Start(b, testenv.Options{})
			bodies := simulatedHosts(b, s, fmt.Sprintf("simw%d", k), "10.230.0.1")
			rawSubj := rawStream(b, s)
			var pids []int
			for range k {
				pids = append(pids, startWorkerProc(b, s))
			}
			workerCPU := func() float64 {
				var sum float64
				for _, pid := range pids {
					sum += cpuSeconds(b, pid)
				}
				return sum
			}
			s.WaitPullers(b, schemas.StreamJobs, schemas.ConsumerCommands, k)
			s.WaitPullers(b, schemas.StreamResults, schemas.ConsumerResults, k)
			for b.Loop() {
				w0, t0, start := workerCPU(), cpuSeconds(b, 0), time.Now()
				v, sps := jobsPerSecond(b, s, bodies)
				el := time.Since(start).Seconds()
				// CPU cores busy while jobs ran: the worker processes, and
				// this process (API, NATS server, simulator, the clients)
				b.ReportMetric((workerCPU()-w0)/el, "cores-workers")
				b.ReportMetric((cpuSeconds(b, 0)-t0)/el, "cores-api+nats+sim")
				raw := rawPublish(b, s, rawSubj, bodies[0], jpsClients, jpsJobs)
				jps[k] = v
				b.ReportMetric(v, "jobs/s")
				b.ReportMetric(sps, "submits/s")
				b.ReportMetric(raw, "raw-js-pubs/s")
				record(b, row{fmt.Sprintf("single-host jobs/s, %d worker process(es) of the binary", k), rate(v, "/s"),
					rate(raw, "/s") + " (raw JetStream publish-with-ack, 64 clients)",
					fmt.Sprintf("%.3f", v/raw), noGoal, noGoal})
			}
		})
	}
	if jps[1] > 0 && jps[4] > 0 {
		x := jps[4] / jps[1]
		b.ReportMetric(x, "speedup-4v1")
		lin := float64(min(4, runtimeCPUs()))
		record(b, row{"speed-up, 4 vs 1 worker processes", fmt.Sprintf("%.2f×", x),
			fmt.Sprintf("%.0f× (linear in the %d cores this machine has)", lin, runtimeCPUs()),
			fmt.Sprintf("%.2f", x/lin), noGoal, noGoal})
	}
}
