package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
// built for this run) against the system, pinned to CPU cpu with taskset
// when cpu >= 0; it returns the worker's process id (taskset execs it).
func startWorkerProc(b *testing.B, s *testenv.System, cpu int) int {
	b.Helper()
	argv := []string{fleetjobBinary(b), "worker", "--workers", "1"}
	if cpu >= 0 {
		argv = append([]string{tasksetPath, "-c", strconv.Itoa(cpu)}, argv...)
	}
	return startProc(b, []string{"NATS_URL=" + s.NATSURL, "REDIS_URL=" + s.RedisURL, "FLEETJOB_LOG_LEVEL=warn",
		"FLEETJOB_NATS_CREDS=" + s.NATS.CredsFile(b, natsauth.RoleWorker)}, argv...)
}

// tasksetPath pins processes to CPUs (util-linux).
const tasksetPath = "/usr/bin/taskset"

// startProc runs argv (a program and its arguments) with env added to this
// process's environment; it is killed at cleanup, and its output is
// printed if the benchmark fails (or FLEETJOB_BENCH_PROCLOGS is set). It
// returns the process id.
func startProc(b *testing.B, env []string, argv ...string) int {
	b.Helper()
	logf, err := os.CreateTemp(b.TempDir(), filepath.Base(argv[0])+"-*.log")
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	b.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if b.Failed() || os.Getenv("FLEETJOB_BENCH_PROCLOGS") != "" {
			out, _ := os.ReadFile(logf.Name())
			b.Logf("output of %v:\n%s", argv, out)
		}
	})
	return cmd.Process.Pid
}

// machineBusy is the CPU time every process of the machine (other users'
// too) has used, and the time all its CPUs have had, from /proc/stat, in
// clock ticks; busy/total over a window is the share of the machine that
// was busy.
func machineBusy(b *testing.B) (busy, total uint64) {
	b.Helper()
	st, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(st), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	for i, v := range f[1:min(len(f), 9)] {
		n, _ := strconv.ParseUint(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
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
// --workers 1` each), then 1 and 2 of them pinned to a core each with
// taskset (CPU 0; CPUs 0 and 1; skipped without /usr/bin/taskset or with
// fewer than 2 CPUs); the API, NATS, Redis and the simulator are as in
// the other benchmarks, and not pinned. Each run gets a fresh system, and
// beside each figure is raw JetStream publish-with-ack (64 clients) in
// that system. It also reports the CPU cores the worker processes, this
// process and the whole machine (other users too) kept busy while the
// jobs ran, to tell a worker bottleneck from a saturated machine: 2
// processes should beat 1 whenever the machine had idle CPU.
func BenchmarkWorkers124(b *testing.B) {
	fleetjobBinary(b) // built before anything is timed
	type run struct {
		procs  int
		pinned bool
	}
	runs := []run{{1, false}, {2, false}, {4, false}, {1, true}, {2, true}}
	type result struct{ jps, workers, here, machine float64 }
	res := map[run]result{}
	for _, r := range runs {
		name := fmt.Sprintf("procs=%d", r.procs)
		if r.pinned {
			name = fmt.Sprintf("pinned-procs=%d", r.procs)
		}
		b.Run(name, func(b *testing.B) {
			if r.pinned {
				if _, err := os.Stat(tasksetPath); err != nil {
					b.Skipf("no pinned runs: %v", err)
				}
				if runtimeCPUs() < r.procs {
					b.Skipf("no pinned runs: %d CPUs for %d processes", runtimeCPUs(), r.procs)
				}
			}
			s := testenv.Start(b, testenv.Options{})
			bodies := simulatedHosts(b, s, fmt.Sprintf("simw%d", r.procs), "10.230.0.1")
			rawSubj := rawStream(b, s)
			var pids []int
			for i := range r.procs {
				cpu := -1
				if r.pinned {
					cpu = i
				}
				pids = append(pids, startWorkerProc(b, s, cpu))
			}
			workerCPU := func() float64 {
				var sum float64
				for _, pid := range pids {
					sum += cpuSeconds(b, pid)
				}
				return sum
			}
			s.WaitPullers(b, schemas.StreamJobs, schemas.ConsumerCommands, r.procs)
			s.WaitResultPullers(b, r.procs)
			for b.Loop() {
				w0, t0, start := workerCPU(), cpuSeconds(b, 0), time.Now()
				m0, n0 := machineBusy(b)
				v, sps := jobsPerSecond(b, s, bodies)
				el := time.Since(start).Seconds()
				m1, n1 := machineBusy(b)
				// CPU cores busy while jobs ran: the worker processes, this
				// process (API, NATS server, simulator, the clients), and
				// the whole machine
				got := result{jps: v, workers: (workerCPU() - w0) / el, here: (cpuSeconds(b, 0) - t0) / el,
					machine: float64(m1-m0) / float64(max(1, n1-n0)) * float64(runtimeCPUs())}
				b.ReportMetric(got.workers, "cores-workers")
				b.ReportMetric(got.here, "cores-api+nats+sim")
				b.ReportMetric(got.machine, "cores-machine")
				raw := rawPublish(b, s, rawSubj, bodies[0], jpsClients, jpsJobs)
				res[r] = got
				b.ReportMetric(v, "jobs/s")
				b.ReportMetric(sps, "submits/s")
				b.ReportMetric(raw, "raw-js-pubs/s")
				measure := fmt.Sprintf("single-host jobs/s, %d worker process(es) of the binary", r.procs)
				if r.pinned {
					measure += ", pinned with taskset (" + []string{"CPU 0", "one each on CPUs 0 and 1"}[r.procs-1] + ")"
				}
				record(b, row{measure, rate(v, "/s"),
					rate(raw, "/s") + " (raw JetStream publish-with-ack, 64 clients)",
					fmt.Sprintf("%.3f", v/raw), noGoal, noGoal})
			}
		})
	}
	if one, four := res[run{1, false}], res[run{4, false}]; one.jps > 0 && four.jps > 0 {
		x := four.jps / one.jps
		b.ReportMetric(x, "speedup-4v1")
		lin := float64(min(4, runtimeCPUs()))
		record(b, row{"speed-up, 4 vs 1 worker processes", fmt.Sprintf("%.2f×", x),
			fmt.Sprintf("%.0f× (linear in the %d cores this machine has)", lin, runtimeCPUs()),
			fmt.Sprintf("%.2f", x/lin), noGoal, noGoal})
	}
	for _, pinned := range []bool{false, true} {
		one, two := res[run{1, pinned}], res[run{2, pinned}]
		if one.jps == 0 || two.jps == 0 {
			continue
		}
		x := two.jps / one.jps
		measure, metric := "speed-up, 2 vs 1 worker processes", "speedup-2v1"
		if pinned {
			measure, metric = measure+", pinned", metric+"-pinned"
		}
		b.ReportMetric(x, metric)
		// a second process can only help if the first run left CPU idle
		idle := float64(runtimeCPUs()) - one.machine
		met := "— (no idle CPU)"
		if idle >= 0.25 {
			met = metYes(x > 1)
		}
		busy := func(r result) string {
			return fmt.Sprintf("workers %.2f + this process %.2f, machine %.2f of %d", r.workers, r.here, r.machine, runtimeCPUs())
		}
		record(b, row{measure, fmt.Sprintf("%.2f×", x),
			fmt.Sprintf("2× (linear); cores busy with 1: %s; with 2: %s", busy(one), busy(two)),
			fmt.Sprintf("%.2f", x/2), "> 1 with idle CPU (>= 0.25 core idle with 1)", met})
	}
}

// startSimulatorProc runs n simulated agents (pool pool, IPs from first)
// as a process of the binary (`fleetjob agent --simulate n`), as a load
// tool on another host would, and waits until the last one is registered;
// it returns the process id.
func startSimulatorProc(b *testing.B, s *testenv.System, pool string, n int, first string) int {
	b.Helper()
	creds := s.EnrolSimulator(b, pool, n, first)
	path := filepath.Join(b.TempDir(), pool+".creds")
	if err := natsauth.WriteCreds(path, creds); err != nil {
		b.Fatal(err)
	}
	pid := startProc(b, []string{"NATS_URL=" + s.NATSURL, "FLEETJOB_LOG_LEVEL=warn"}, fleetjobBinary(b), "agent",
		"--nats-creds", path, "--simulate", strconv.Itoa(n), "--sim-pool", pool, "--sim-first-ip", first)
	s.WaitAgent(b, fmt.Sprintf("%s-%d", pool, n-1))
	return pid
}
