package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/api/native"
	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// BenchmarkBigJobsNoAgents submits ten jobs of 20,000 hosts each at once,
// none of whose agents exist, with agent_wait 5 s: every host must end
// agent_offline once the wait is over. It measures the time from the
// submissions to the last job final beside the deadline itself (the wait),
// the peak RSS of the process while they run beside its RSS before, and
// the latency of a one-host job (submit → final, on a live agent)
// submitted once a second meanwhile, beside the same job's latency on the
// idle system in the same run.
func BenchmarkBigJobsNoAgents(b *testing.B) {
	const jobs, hosts, wait = 10, 20_000, 5
	s := testenv.Start(b, testenv.Options{Workers: 2, Agents: []string{bigProbeAgent + "=" + bigProbeIP}})
	client := &http.Client{Timeout: time.Minute}
	bodies := bigJobBodies(jobs, hosts, wait, func(j, i int) string {
		return fmt.Sprintf("10.%d.%d.%d", 100+j, i/250, i%250+1)
	})
	for b.Loop() {
		r := runBigJobs(b, s, client, bodies)
		var sum schemas.JobSummary
		if _, err := getJSON(client, s, fmt.Sprintf("/v1/jobs/%d", r.ids[0]), &sum); err != nil {
			b.Fatal(err)
		}
		if sum.Counts["agent_offline"] != hosts {
			b.Fatalf("job %d ended %s with %v, want %d hosts agent_offline", r.ids[0], sum.Status, sum.Counts, hosts)
		}
		r.record(b, "10 jobs × 20,000 hosts, no agents, agent_wait 5 s", wait, "")
	}
}

// BenchmarkBigJobsWithAgents is BenchmarkBigJobsNoAgents with half of
// each job's hosts served: 10,000 simulated agents online that answer at
// once, and each of the ten 20,000-host jobs (agent_wait 5 s) targets all
// of them plus 10,000 hosts no agent serves (other ones per job). Its rows
// are the same three (all final beside the wait, peak RSS, the one-host
// probe meanwhile), and it fails unless every job ends with exactly 10,000
// success and 10,000 agent_offline and, every host recorded once, exactly
// 20,000 host.finished events naming 20,000 different hosts (a big job's
// events follow its final status, so they are waited for, up to two
// minutes).
func BenchmarkBigJobsWithAgents(b *testing.B) {
	const jobs, hosts, agents, wait = 10, 20_000, 10_000, 5
	s := testenv.Start(b, testenv.Options{Workers: 2, Agents: []string{bigProbeAgent + "=" + bigProbeIP}})
	first := netip.MustParseAddr("10.240.0.1")
	t0 := time.Now()
	if os.Getenv("FLEETJOB_BENCH_SIM_PROC") != "" {
		startSimulatorProc(b, s, "simbig", agents, first.String())
	} else {
		s.StartSimulator(b, "simbig", agents, first.String())
	}
	b.Logf("%d simulated agents online in %.1f s", agents, time.Since(t0).Seconds())
	served := make([]string, agents)
	for i, ip := 0, first; i < agents; i, ip = i+1, ip.Next() {
		served[i] = ip.String() // agent.SimulatedIP(first, i), without its walk from first each time
	}
	client := &http.Client{Timeout: time.Minute}
	bodies := bigJobBodies(jobs, hosts, wait, func(j, i int) string {
		if i < agents {
			return served[i]
		}
		i -= agents
		return fmt.Sprintf("10.%d.%d.%d", 100+j, i/250, i%250+1)
	})
	for b.Loop() {
		r := runBigJobs(b, s, client, bodies)
		// every host recorded once: the counts, then the events
		for _, id := range r.ids {
			var sum schemas.JobSummary
			if _, err := getJSON(client, s, fmt.Sprintf("/v1/jobs/%d", id), &sum); err != nil {
				b.Fatal(err)
			}
			if sum.Counts["success"] != agents || sum.Counts["agent_offline"] != hosts-agents || sum.TotalHosts != hosts {
				b.Fatalf("job %d ended %s with %v of %d hosts, want %d success and %d agent_offline; the served hosts that did not succeed: %s",
					id, sum.Status, sum.Counts, sum.TotalHosts, agents, hosts-agents, unsucceeded(client, s, id, served))
			}
		}
		evStart := time.Now()
		deadline := evStart.Add(2 * time.Minute)
		for _, id := range r.ids {
			var ev hostEvents
			for {
				ev = hostFinishedEvents(b, s, id)
				if ev.n >= hosts || time.Now().After(deadline) {
					break
				}
				time.Sleep(250 * time.Millisecond) // polling with a deadline: the events follow the final status
			}
			if ev.n != hosts || ev.hosts != hosts || ev.status["success"] != agents || ev.status["agent_offline"] != hosts-agents {
				b.Fatalf("job %d: %d host.finished events naming %d hosts, %v; want %d naming %d (%d success, %d agent_offline)",
					id, ev.n, ev.hosts, ev.status, hosts, hosts, agents, hosts-agents)
			}
		}
		evLag := time.Since(evStart)
		what := fmt.Sprintf("10 jobs × 20,000 hosts, %s answering sim. agents, agent_wait 5 s", thousands(agents))
		r.record(b, what, wait, ", agents answering")
		b.ReportMetric(evLag.Seconds(), "s-events-after-final")
		record(b, row{"… every host recorded once: " + thousands(agents) + " success + " + thousands(hosts-agents) +
			" agent_offline and 20,000 host.finished events (20,000 hosts) per job",
			fmt.Sprintf("all 10 jobs (events read back in %.1f s after the last final)", evLag.Seconds()),
			"— (a check: the benchmark fails otherwise)", noGoal, "each host once", "yes"})
	}
}

// storedState says what the jobs bucket holds of job id's state (the
// truth the status cache follows): its status, its hosts' statuses, when
// it was last written, and its revision.
func storedState(s *testenv.System, id int64) string {
	ctx := context.Background()
	kv, err := s.JS.KeyValue(ctx, schemas.BucketJobs)
	if err != nil {
		return fmt.Sprintf("jobs bucket: %v", err)
	}
	e, err := kv.Get(ctx, schemas.KeyJobState(id))
	if err != nil {
		return fmt.Sprintf("state of job %d in the jobs bucket: %v", id, err)
	}
	var st schemas.JobState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return fmt.Sprintf("state of job %d in the jobs bucket: %v", id, err)
	}
	hosts := map[string]int{}
	for _, ss := range st.Steps {
		for _, h := range ss.Hosts.Status {
			hosts[h.String()]++
		}
	}
	return fmt.Sprintf("the jobs bucket holds it %s (hosts %v), updated %s, revision %d", st.Status, hosts,
		st.UpdatedAt.Format(time.StampMilli), e.Revision())
}

// unsucceeded says why the hosts of job id in served did not succeed: how
// many ended how, with what error, from when to when.
func unsucceeded(client *http.Client, s *testenv.System, id int64, served []string) string {
	ok := map[string]bool{}
	for _, ip := range served {
		ok[ip] = true
	}
	why := map[string]int{}
	var first, last time.Time
	for page := 1; ; page++ {
		var rows native.ListResponse[native.HostView]
		if _, err := getJSON(client, s, fmt.Sprintf("/v1/jobs/%d/hosts?size=10000&page=%d", id, page), &rows); err != nil {
			return err.Error()
		}
		for _, h := range rows.Items {
			if !ok[h.Host.IP] || h.Status == schemas.HostSuccess {
				continue
			}
			why[h.Status.String()+": "+h.Error]++
			if first.IsZero() || h.EndedAt.Before(first) {
				first = h.EndedAt
			}
			if h.EndedAt.After(last) {
				last = h.EndedAt
			}
		}
		if len(rows.Items) < 10000 {
			break
		}
	}
	return fmt.Sprintf("%v, ended %s to %s", why, first.Format(time.StampMilli), last.Format(time.StampMilli))
}

// The live agent of the one-host probe job of the big-job benchmarks. Its
// id sorts after the simulator's identities: StartSimulator waits for the
// last of them in the first 10,000 agents by id (GET /v1/agents?size=10000).
const bigProbeAgent, bigProbeIP = "zprobe", "127.0.7.1"

// bigJobBodies returns the bodies of jobs `true` jobs of hosts hosts each
// with agent_wait wait; target(j, i) is host i of job j.
func bigJobBodies(jobs, hosts, wait int, target func(j, i int) string) [][]byte {
	bodies := make([][]byte, jobs)
	for j := range bodies {
		targets := make([]string, hosts)
		for i := range targets {
			targets[i] = target(j, i)
		}
		bodies[j], _ = json.Marshal(map[string]any{"name": fmt.Sprintf("big-%d", j), "targets": targets,
			"agent_wait": wait, "steps": []any{map[string]any{"script": map[string]any{"content": "true"}}}})
	}
	return bodies
}

// bigJobsRun is what one run of big jobs measured.
type bigJobsRun struct {
	ids             []int64
	last            time.Duration // from the submissions to the last job final
	rssBefore, peak uint64
	idle, during    []time.Duration // the probe on the idle system, and meanwhile
	// its bare floor (bareProbe) on the idle system, and meanwhile
	bareIdle, bareDuring []time.Duration
}

// runBigJobs measures the probe (a one-host job on bigProbeIP, submit →
// final) 30 times on the idle system, then submits bodies at once, runs
// the probe once a second until every job is final, and returns the jobs,
// the time to the last one final and the process's RSS before and at
// peak. The jobs' results are the caller's to check.
func runBigJobs(b *testing.B, s *testenv.System, client *http.Client, bodies [][]byte) bigJobsRun {
	b.Helper()
	probeBody, _ := json.Marshal(map[string]any{"name": "probe", "targets": []string{bigProbeIP},
		"steps": []any{map[string]any{"script": map[string]any{"content": "true"}}}})
	var r bigJobsRun
	for range 30 {
		t0 := time.Now()
		id, err := post(client, s, probeBody)
		if err == nil {
			err = finalWithin(client, s, id, time.Minute, 2*time.Millisecond)
		}
		if err != nil {
			b.Fatal(err)
		}
		r.idle = append(r.idle, time.Since(t0))
	}
	bare := newBareProbe(b, s)
	r.bareIdle = bare.idle(b, 30)
	r.rssBefore = procStatus(b, "VmRSS")
	resetPeakRSS(b)
	stopProfile := sync.OnceFunc(profileWindow(b, "")) // the storm: submissions to all final
	defer stopProfile()
	start := time.Now()
	r.ids = make([]int64, len(bodies))
	var wg sync.WaitGroup
	for j := range bodies {
		wg.Go(func() {
			id, err := post(client, s, bodies[j])
			if err != nil {
				b.Error(err)
			}
			r.ids[j] = id
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	done, stop := make(chan struct{}), make(chan struct{})
	bareDone := bare.meanwhile(stop)
	var probeErr error
	go func() {
		defer close(done)
		for tick := time.NewTicker(time.Second); ; {
			select {
			case <-stop:
				tick.Stop()
				return
			case <-tick.C:
			}
			t0 := time.Now()
			id, err := post(client, s, probeBody)
			if err == nil {
				if err = finalWithin(client, s, id, 2*time.Minute, 2*time.Millisecond); err != nil {
					err = fmt.Errorf("%w; %s", err, storedState(s, id))
				}
			}
			if err != nil {
				probeErr = err
				return
			}
			r.during = append(r.during, time.Since(t0))
			probeStages(client, s, id, t0, time.Now())
		}
	}()
	for _, id := range r.ids {
		// (bounded well below make bench's 20 minutes: all are final in
		// under a minute, or something is wrong)
		if err := finalWithin(client, s, id, 3*time.Minute, 50*time.Millisecond); err != nil {
			b.Fatalf("%v; %s", err, storedState(s, id))
		}
		r.last = time.Since(start)
	}
	r.peak = procStatus(b, "VmHWM")
	stopProfile()
	close(stop)
	<-done
	if probeErr != nil {
		b.Fatalf("probe: %v", probeErr)
	}
	var bareErr error
	if r.bareDuring, bareErr = bareDone(); bareErr != nil {
		b.Fatalf("bare probe: %v", bareErr)
	}
	if len(r.during) == 0 {
		r.during = append(r.during, r.last) // not one probe finished: the storm took all of it
	}
	return r
}

// record puts the run's three rows in the table: what (the jobs) to all
// final beside the wait, the peak RSS, and the probe's percentiles; tag
// tells the last two apart from another benchmark's.
func (r bigJobsRun) record(b *testing.B, what string, wait int, tag string) {
	late := r.last - time.Duration(wait)*time.Second
	b.ReportMetric(r.last.Seconds(), "s-all-final")
	b.ReportMetric(float64(r.peak)/(1<<20), "MiB-peak-rss")
	record(b, row{what + ": submit → all final", fmt.Sprintf("%.1f s", r.last.Seconds()),
		fmt.Sprintf("%d s (the wait: no host can end before it)", wait),
		fmt.Sprintf("%.1f s late", late.Seconds()), "<= 30 s late", metYes(late <= 30*time.Second)})
	record(b, row{"… peak RSS of the process meanwhile" + tag, bytesStr(float64(r.peak)),
		bytesStr(float64(r.rssBefore)) + " (its RSS just before)", fmt.Sprintf("%.1f×", float64(r.peak)/float64(r.rssBefore)), noGoal, noGoal})
	recordPercentiles(b, "one-host job %s, submit → final, once a second meanwhile"+tag, r.during, r.idle,
		"the same job on the idle system", 50*time.Millisecond)
	bare99, bareIdle99 := percentile(r.bareDuring, 99), percentile(r.bareIdle, 99)
	b.ReportMetric(ms(bare99), "bare-p99-ms")
	record(b, row{"… its bare floor p99 meanwhile" + tag + ": 4 JetStream writes in a row + bash -c true, no fleetjob",
		fmt.Sprintf("%.2f ms", ms(bare99)), fmt.Sprintf("%.2f ms (the same on the idle system)", ms(bareIdle99)),
		fmt.Sprintf("%.1f×", ms(bare99)/ms(bareIdle99)), noGoal, noGoal})
}

// hostEvents is what a job's host.finished events say.
type hostEvents struct {
	n, hosts int            // events, and the different hosts they name
	status   map[string]int // events by the host's status
}

// hostFinishedEvents reads job id's events from the EVENTS stream (CloudEvents
// batch messages on fleetjob.event.*.*.<id>) and sums up its host.finished
// ones.
func hostFinishedEvents(b *testing.B, s *testenv.System, id int64) hostEvents {
	b.Helper()
	ctx := context.Background()
	st, err := s.JS.Stream(ctx, schemas.StreamEvents)
	if err != nil {
		b.Fatal(err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{fmt.Sprintf("fleetjob.event.*.*.%d", id)}})
	if err != nil {
		b.Fatal(err)
	}
	out := hostEvents{status: map[string]int{}}
	seen := map[schemas.Host]bool{}
	for {
		batch, err := cons.FetchNoWait(500) // what the stream holds now: the caller polls
		if err != nil {
			b.Fatal(err)
		}
		n, last := 0, false
		for m := range batch.Messages() {
			n++
			all, err := events.DecodeAll(m.Headers(), m.Data())
			if err != nil {
				b.Fatalf("event of job %d: %v", id, err)
			}
			for _, d := range all {
				if d.Type != events.TypePrefix+events.HostFinished {
					continue
				}
				var hr schemas.HostResult
				if err := json.Unmarshal(d.Data, &hr); err != nil {
					b.Fatalf("host.finished event of job %d: %v", id, err)
				}
				out.n++
				out.status[hr.Status.String()]++
				seen[hr.Host] = true
			}
			if meta, err := m.Metadata(); err == nil && meta.NumPending == 0 {
				last = true
			}
		}
		if batch.Error() != nil && !errors.Is(batch.Error(), nats.ErrTimeout) {
			b.Fatalf("events of job %d: %v", id, batch.Error())
		}
		if n == 0 || last {
			out.hosts = len(seen)
			return out
		}
	}
}

// finalWithin polls a job until it is final, from any goroutine.
// probeStages prints, when FLEETJOB_BENCH_TIMELINE is set, where a probe
// job's time went: submit → its first commit (created_at) → its host
// started → ended (the agent) → its final commit (ended_at) → seen final
// through the API (the status cache).
func probeStages(client *http.Client, s *testenv.System, id int64, submitted, seen time.Time) {
	if os.Getenv("FLEETJOB_BENCH_TIMELINE") == "" {
		return
	}
	var sum schemas.JobSummary
	var hosts struct {
		Items []struct {
			StartedAt time.Time `json:"started_at"`
			EndedAt   time.Time `json:"ended_at"`
		} `json:"items"`
	}
	getJSON(client, s, fmt.Sprintf("/v1/jobs/%d", id), &sum)
	getJSON(client, s, fmt.Sprintf("/v1/jobs/%d/hosts", id), &hosts)
	if len(hosts.Items) != 1 {
		return
	}
	h := hosts.Items[0]
	ms := func(a, b time.Time) int64 { return b.Sub(a).Milliseconds() }
	fmt.Printf("probe %d: created +%dms, started +%dms, ran %dms, final commit +%dms, seen +%dms (total %dms)\n", id,
		ms(submitted, sum.CreatedAt), ms(sum.CreatedAt, h.StartedAt), ms(h.StartedAt, h.EndedAt),
		ms(h.EndedAt, sum.EndedAt), ms(sum.EndedAt, seen), ms(submitted, seen))
}

func finalWithin(client *http.Client, s *testenv.System, id int64, timeout, every time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var sum schemas.JobSummary
		code, err := getJSON(client, s, fmt.Sprintf("/v1/jobs/%d", id), &sum)
		if err == nil && code == 200 && schemas.JobFinal(sum.Status) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("job %d not final after %s (%d, %v, %s %v)", id, timeout, code, err, sum.Status, sum.Counts)
		}
		time.Sleep(every) // polling with a deadline: the wait is what is measured
	}
}

// procStatus reads a size field of /proc/self/status, in bytes.
func procStatus(b *testing.B, field string) uint64 { return procStatusOf(b, "self", field) }

// procStatusOf reads a size field of /proc/<pid>/status, in bytes.
func procStatusOf(b *testing.B, pid, field string) uint64 {
	b.Helper()
	raw, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatalf("no %s in /proc/%s/status", field, pid)
	return 0
}

// resetPeakRSS makes VmHWM start again from the current RSS (Linux:
// writing 5 to clear_refs), so the peak is this benchmark's.
func resetPeakRSS(b *testing.B) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("peak RSS not reset (%v): it may include earlier benchmarks", err)
	}
}
