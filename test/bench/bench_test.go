// Package bench measures fleetjob on this machine: go test -bench . (or
// make bench). Each benchmark prints its figures with b.ReportMetric and
// measures, in the same run, the physical limit of what it measures; after
// the run TestMain prints one table of figure, limit, ratio and goal
// (main_test.go). Nothing here asserts on speed.
//
// Knobs: FLEETJOB_BENCH_TIMELINE=1 prints the streams' last sequences
// every 50 ms through BenchmarkFanOut10kSimulated's window, and each
// big-job probe's stages (probeStages) and its bare floor's (bareProbe); FLEETJOB_BENCH_CPUPROFILE=<dir>
// writes CPU profiles of measured windows (profileWindow);
// FLEETJOB_BENCH_HEAPPROFILE=<file> writes heap profiles in
// BenchmarkMemoryQueued; FLEETJOB_BENCH_SHARED_CONN=1 makes the 1,000 agents
// of BenchmarkRealAgents1000 share one NATS connection (as testenv's
// agents do) instead of one each; FLEETJOB_BENCH_SERVE_ARGS adds flags to
// the `fleetjob serve` of BenchmarkServeRSS (e.g. --cache-keep-finished
// 1000000), FLEETJOB_BENCH_SERVE_JOBS runs it with another number of jobs
// (the default is the 100000) and FLEETJOB_BENCH_SERVE_HEAPPROFILE
// saves serve's heap profiles; FLEETJOB_BENCH_SIM_PROC=1 runs
// BenchmarkBigJobsWithAgents's 10,000 simulated agents as a process of the
// binary (`fleetjob agent --simulate`) instead of in the test process.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/api/native"
	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
)

// BenchmarkStartLatency measures, on an idle system, the time from the
// POST of a one-host job to the agent starting its script (the agent's own
// start timestamp), one job at a time. The floor beside it is the least a
// start can cost through a durable store: two chained JetStream hops (the
// submit command and the task), each a publish-with-ack to a file stream
// taken by a pull consumer, measured one at a time in the same run.
func BenchmarkStartLatency(b *testing.B) {
	const jobs = 200
	s := testenv.Start(b, testenv.Options{Workers: 2, Agents: []string{"a1=127.0.0.1"}})
	client := &http.Client{}
	body := jobBody("127.0.0.1")
	for b.Loop() {
		floor := hopLatency(b, s, jobs)
		// idle means idle: the garbage of the benchmarks before is collected,
		// and the first jobs (connections, caches) are not counted
		runtime.GC()
		const warm = 10
		lat := make([]time.Duration, 0, jobs+warm)
		for range jobs + warm {
			t0 := time.Now()
			id, err := post(client, s, body)
			if err != nil {
				b.Fatal(err)
			}
			var h native.HostView
			testenv.Eventually(b, 30*time.Second, func() bool {
				var out native.ListResponse[native.HostView]
				s.JSON(b, "GET", fmt.Sprintf("/v1/jobs/%d/hosts", id), nil, nil, &out)
				if len(out.Items) == 1 && out.Items[0].Status.Final() {
					h = out.Items[0]
					return true
				}
				return false
			}, "job %d", id)
			lat = append(lat, h.StartedAt.Sub(t0))
		}
		recordPercentiles(b, "start latency %s, submit → agent starts", lat[warm:], floor,
			"2 chained JetStream hops: publish-with-ack → pull consumer, twice", 10*time.Millisecond)
	}
}

// hopLatency measures n times, one at a time, a message going through two
// JetStream hops: published with ack to a file stream, taken by a pull
// consumer that publishes it with ack to the next subject, taken by a
// second pull consumer. Each latency runs to the second consumer's receipt.
func hopLatency(b *testing.B, s *testenv.System, n int) []time.Duration {
	b.Helper()
	ctx := context.Background()
	st, err := s.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCHHOPS", Subjects: []string{"bench.hop.>"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	defer s.JS.DeleteStream(ctx, "BENCHHOPS")
	consume := func(name string, f func(jetstream.Msg)) jetstream.ConsumeContext {
		c, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: name, FilterSubject: "bench.hop." + name,
			AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			b.Fatal(err)
		}
		cc, err := c.Consume(f)
		if err != nil {
			b.Fatal(err)
		}
		return cc
	}
	arrived := make(chan time.Time, 1)
	cc1 := consume("1", func(m jetstream.Msg) {
		if _, err := s.JS.Publish(ctx, "bench.hop.2", m.Data()); err != nil {
			b.Error(err)
		}
		m.Ack()
	})
	defer cc1.Stop()
	cc2 := consume("2", func(m jetstream.Msg) {
		arrived <- time.Now()
		m.Ack()
	})
	defer cc2.Stop()
	body := jobBody("127.0.0.1")
	out := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		if _, err := s.JS.Publish(ctx, "bench.hop.1", body); err != nil {
			b.Fatal(err)
		}
		select {
		case t := <-arrived:
			out = append(out, t.Sub(t0))
		case <-time.After(30 * time.Second):
			b.Fatal("hop message lost")
		}
	}
	return out
}

// BenchmarkFanOut200 measures one `true` script on 200 agents (in-process
// agents with separate identities, each running real bash): from the POST
// to the job.finished event, beside a bare Go program spawning the same 200
// `bash -c true` processes all at once (the job's default concurrency),
// just before and just after (their mean).
func BenchmarkFanOut200(b *testing.B) {
	const n = 200
	var agents, ips []string
	for i := range n {
		ip := fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250)
		agents, ips = append(agents, fmt.Sprintf("f%d=%s", i, ip)), append(ips, ip)
	}
	s := testenv.Start(b, testenv.Options{Workers: 2, Agents: agents})
	client := &http.Client{}
	body := jobBody(ips...)
	for b.Loop() {
		bare1 := spawnBash(b, n, n)
		done := make(chan string, 1)
		sub, err := s.NC.Subscribe(events.Subject(events.JobFinished, "*"), func(m *nats.Msg) {
			d, _ := events.Decode(m.Header, m.Data)
			done <- d.Subject
		})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		id, err := post(client, s, body)
		if err != nil {
			b.Fatal(err)
		}
		select {
		case got := <-done:
			if got != fmt.Sprint(id) {
				b.Fatalf("finished %s, want %d", got, id)
			}
		case <-time.After(2 * time.Minute):
			b.Fatal("job did not finish")
		}
		el := time.Since(start)
		floor := (bare1 + spawnBash(b, n, n)) / 2 // before and after, on a shared machine
		sub.Unsubscribe()
		var sum schemas.JobSummary
		s.JSON(b, "GET", fmt.Sprintf("/v1/jobs/%d", id), nil, nil, &sum)
		if sum.Counts["success"] != n {
			b.Fatalf("got %v, want %d successes", sum.Counts, n)
		}
		b.ReportMetric(el.Seconds(), "s/200-hosts")
		b.ReportMetric(floor.Seconds(), "s-bare-spawn")
		record(b, row{"fan-out, `true` on 200 in-process agents", fmt.Sprintf("%.3f s", el.Seconds()),
			fmt.Sprintf("%.3f s (Go spawning 200 `bash -c true`, all at once)", floor.Seconds()),
			fmt.Sprintf("%.1f×", el.Seconds()/floor.Seconds()), noGoal, noGoal})
	}
}

// BenchmarkFileDistribution measures a file step sending one 64 MiB file
// from one source to 10 targets (in-process agents on loopback, the real
// upload/download code with SHA-256 checks and fsync), beside the raw
// Object Store doing the same in the same run: one Put, then 10 parallel
// Gets, each on a connection of its own as each agent has its own (10 Gets
// on one connection run at a tenth of that). Both rates are bytes
// delivered to all targets per second.
func BenchmarkFileDistribution(b *testing.B) {
	const targets, size = 10, 64 << 20
	agents := []string{"src=127.0.9.1"}
	var ips []string
	for i := range targets {
		ip := fmt.Sprintf("127.0.9.%d", 10+i)
		agents, ips = append(agents, fmt.Sprintf("dst%d=%s", i, ip)), append(ips, ip)
	}
	s := testenv.Start(b, testenv.Options{Workers: 2, Agents: agents})
	dir := b.TempDir()
	src := dir + "/payload.bin"
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 2654435761 >> 13)
	}
	if err := os.WriteFile(src, data, 0o644); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	obs, err := s.JS.ObjectStore(ctx, schemas.BucketArtifacts)
	if err != nil {
		b.Fatal(err)
	}
	getters := make([]jetstream.ObjectStore, targets)
	for i := range getters {
		js, err := jetstream.New(s.NATS.Connect(b, natsauth.RoleWorker))
		if err != nil {
			b.Fatal(err)
		}
		if getters[i], err = js.ObjectStore(ctx, schemas.BucketArtifacts); err != nil {
			b.Fatal(err)
		}
	}
	client := &http.Client{}
	for b.Loop() {
		// raw: one put, ten parallel gets
		start := time.Now()
		if _, err := obs.PutBytes(ctx, "bench/raw", data); err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, getter := range getters {
			wg.Go(func() {
				gctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
				defer cancel()
				r, err := getter.Get(gctx, "bench/raw")
				if err != nil {
					b.Error(err)
					return
				}
				defer r.Close()
				if n, err := io.Copy(io.Discard, r); err != nil || n != size {
					b.Errorf("raw get: %d %v", n, err)
				}
			})
		}
		wg.Wait()
		raw := float64(targets*size) / time.Since(start).Seconds() / (1 << 20)

		body, _ := json.Marshal(map[string]any{"targets": ips, "steps": []any{map[string]any{"file": map[string]any{
			"sources":     []any{map[string]any{"hosts": []string{"127.0.9.1"}, "paths": []string{src}}},
			"destination": fmt.Sprintf("%s/out-%d", dir, time.Now().UnixNano()),
		}}}})
		start = time.Now()
		id, err := post(client, s, body)
		if err != nil {
			b.Fatal(err)
		}
		var sum schemas.JobSummary
		testenv.Eventually(b, 5*time.Minute, func() bool {
			s.JSON(b, "GET", fmt.Sprintf("/v1/jobs/%d", id), nil, nil, &sum)
			return schemas.JobFinal(sum.Status)
		}, "file job")
		el := time.Since(start)
		if sum.Status != schemas.JobSuccess {
			b.Fatalf("file job %s %v", sum.Status, sum.Counts)
		}
		ours := float64(targets*size) / el.Seconds() / (1 << 20)
		b.ReportMetric(ours, "MB/s-fleetjob")
		b.ReportMetric(raw, "MB/s-raw-objstore")
		b.ReportMetric(ours/raw, "ratio")
		record(b, row{"file distribution, 64 MiB to 10 agents", fmt.Sprintf("%.0f MB/s", ours),
			fmt.Sprintf("%.0f MB/s (raw object store: 1 put + 10 parallel gets)", raw),
			fmt.Sprintf("%.2f", ours/raw), noGoal, noGoal})
	}
}

// BenchmarkFanOut10kSimulated measures one job to 10,000 simulated agents
// (agent --simulate: one consumer, each task finished at once), from the
// POST to the job.finished event, beside the floor measured in the same
// run: one core-NATS request answered by 10,000 responders on 100
// connections, to the last reply.
func BenchmarkFanOut10kSimulated(b *testing.B) {
	const n = 10000
	s := testenv.Start(b, testenv.Options{Workers: 2})
	first := netip.MustParseAddr("10.210.0.1")
	s.StartSimulator(b, "simb", n, first.String())
	targets := make([]string, n)
	for i := range n {
		targets[i] = agent.SimulatedIP(first, i).String()
	}
	body := jobBody(targets...)
	client := &http.Client{}
	// what 10,000 online agents cost while nothing runs: their heartbeats
	// (a registry write each every 5 s) and the registry watches
	// on purpose: let a heartbeat period (5 s) pass so that every agent has
	// heartbeated once since start and the idle figure is the steady state
	time.Sleep(6 * time.Second)
	idle := idleCPU(b, 10*time.Second)
	b.ReportMetric(idle, "idle-cores")
	record(b, row{"idle CPU with 10,000 simulated agents online", fmt.Sprintf("%.3f cores", idle),
		"0 (nothing is running)", noGoal, noGoal, noGoal})
	for b.Loop() {
		// the floor: 10,000 responders spread over 100 connections (as
		// agents would be spread over processes), one request, all replies
		inbox := nats.NewInbox()
		replies := make(chan struct{}, n)
		rsub, _ := s.NC.Subscribe(inbox, func(*nats.Msg) { replies <- struct{}{} })
		var conns []*nats.Conn
		for range 100 {
			nc := s.NATS.Connect(b, natsauth.RoleAdmin)
			conns = append(conns, nc)
			for range n / 100 {
				nc.Subscribe("bench.fanout", func(m *nats.Msg) { m.Respond([]byte("ok")) })
			}
			nc.Flush()
		}
		s.NC.Flush()
		start := time.Now()
		s.NC.PublishRequest("bench.fanout", inbox, []byte("go"))
		for range n {
			<-replies
		}
		floor := time.Since(start)
		for _, nc := range conns {
			nc.Close()
		}
		rsub.Unsubscribe()

		done := make(chan string, 4)
		sub, err := s.NC.Subscribe(events.Subject(events.JobFinished, "*"), func(m *nats.Msg) {
			d, _ := events.Decode(m.Header, m.Data)
			done <- d.Subject
		})
		if err != nil {
			b.Fatal(err)
		}
		stop, tl := profileWindow(b, ""), timeline(s)
		start = time.Now()
		id, err := post(client, s, body)
		if err != nil {
			b.Fatal(err)
		}
		for got := ""; got != fmt.Sprint(id); {
			select {
			case got = <-done:
			case <-time.After(5 * time.Minute):
				b.Fatal("job did not finish")
			}
		}
		el := time.Since(start)
		stop()
		tl()
		sub.Unsubscribe()
		var sum schemas.JobSummary
		s.JSON(b, "GET", fmt.Sprintf("/v1/jobs/%d", id), nil, nil, &sum)
		if sum.Counts["success"] != n {
			b.Fatalf("got %v, want %d successes", sum.Counts, n)
		}
		b.ReportMetric(el.Seconds(), "s/10k-hosts")
		b.ReportMetric(floor.Seconds(), "s-core-nats-floor")
		x := el.Seconds() / floor.Seconds()
		b.ReportMetric(x, "x-floor")
		record(b, row{"fan-out, 10,000 simulated agents", fmt.Sprintf("%.2f s", el.Seconds()),
			fmt.Sprintf("%.3f s (core-NATS request to 10,000 responders on 100 connections)", floor.Seconds()),
			fmt.Sprintf("%.1f×", x), "<= 1 s (issue 11)", metYes(el <= time.Second)})
	}
}

// BenchmarkJobsPerSecond measures single-host jobs end to end at steady
// state: 64 clients submit 5,000 one-host jobs over 1,000 simulated agents
// with two in-process workers; the figure is jobs finished (job.finished
// events) per second from the first POST to the last event. Beside it is
// raw JetStream publish-with-ack at the same concurrency in the same run:
// a job cannot be accepted faster than its one command can be stored.
func BenchmarkJobsPerSecond(b *testing.B) {
	s := testenv.Start(b, testenv.Options{Workers: 2})
	bodies := simulatedHosts(b, s, "simj", "10.220.0.1")
	rawSubj := rawStream(b, s)
	for b.Loop() {
		before, auditBefore := storedByStream(b, s), auditStored(b, s)
		jps, sps := jobsPerSecond(b, s, bodies)
		after, auditAfter := storedByStream(b, s), auditStored(b, s)
		perJob := float64(after.total()-before.total()) / jpsJobs
		// the audit records of the submissions go out batched per action,
		// so many jobs share one message: shown apart from the job's own
		audit := float64(auditAfter-auditBefore) / jpsJobs
		own := perJob - audit
		raw := rawPublish(b, s, rawSubj, bodies[0], jpsClients, jpsJobs)
		tr := &http.Transport{MaxIdleConnsPerHost: jpsClients, MaxConnsPerHost: jpsClients}
		bare := httpFloor(b, &http.Client{Transport: tr}, bodies[0], jpsClients, jpsJobs)
		tr.CloseIdleConnections()
		msgs := int(math.Round(own))
		// a job is at least its submission's HTTP and its own messages
		// (each one raw publish), no worker, agent or cache work at all
		byParts := machineCap(append([]float64{bare}, slices.Repeat([]float64{raw}, msgs)...)...)
		b.ReportMetric(byParts, "cap-jobs/s")
		b.ReportMetric(jps, "jobs/s")
		b.ReportMetric(sps, "submits/s")
		b.ReportMetric(raw, "raw-js-pubs/s")
		b.ReportMetric(perJob, "js-msgs/job")
		record(b, row{"single-host jobs/s, 2 in-process workers, 1,000 sim. agents", rate(jps, "/s"),
			rate(raw, "/s") + " (raw JetStream publish-with-ack, 64 clients)",
			fmt.Sprintf("%.3f", jps/raw), ">= 8,000/s",
			capped(jps >= 8000, rate(byParts, "/s"), fmt.Sprintf("bare HTTP (%s) + %d raw publishes, nothing else", rate(bare, "/s"), msgs))})
		record(b, row{"JetStream messages stored per single-host job (" + after.per(before, jpsJobs) + ")",
			fmt.Sprintf("%.2f + %.3f audit batches (%.0f submissions a message)", own, audit, 1/max(audit, 1e-9)),
			rate(raw/perJob, "jobs/s") + " (the raw publish rate above, spent on nothing else)",
			fmt.Sprintf("%.2f", jps/(raw/perJob)), "<= 5", metYes(own <= 5)})
	}
}

const jpsClients, jpsJobs, jpsHosts = 64, 5000, 1000

// simulatedHosts starts 1,000 simulated agents and returns a one-host job
// body for each.
func simulatedHosts(b *testing.B, s *testenv.System, pool, first string) [][]byte {
	b.Helper()
	ip := netip.MustParseAddr(first)
	s.StartSimulator(b, pool, jpsHosts, first)
	bodies := make([][]byte, jpsHosts)
	for i := range jpsHosts {
		bodies[i] = jobBody(agent.SimulatedIP(ip, i).String())
	}
	return bodies
}

// jobsPerSecond has 64 clients submit 5,000 one-host jobs round the bodies
// and returns jobs finished (job.finished events) per second from the first
// POST to the last event, and submissions per second.
func jobsPerSecond(b *testing.B, s *testenv.System, bodies [][]byte) (float64, float64) {
	b.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: jpsClients, MaxConnsPerHost: jpsClients}
	client := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	var finished atomic.Int64
	all := make(chan struct{})
	sub, err := s.NC.Subscribe(events.Subject(events.JobFinished, "*"), func(*nats.Msg) {
		if finished.Add(1) == jpsJobs {
			close(all)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := s.NC.Flush(); err != nil {
		b.Fatal(err)
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	stop := profileWindow(b, "")
	defer stop()
	start := time.Now()
	for range jpsClients {
		wg.Go(func() {
			for i := n.Add(1); i <= jpsJobs; i = n.Add(1) {
				if _, err := post(client, s, bodies[int(i)%len(bodies)]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	submitted := time.Since(start)
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d jobs finished", finished.Load(), jpsJobs)
	}
	el := time.Since(start)
	return float64(jpsJobs) / el.Seconds(), float64(jpsJobs) / submitted.Seconds()
}

// streamCounts is the number of messages each stream has ever stored (its
// last sequence): work-queue and KV writes included.
type streamCounts map[string]uint64

// auditStored counts the audit messages the EVENTS stream holds.
func auditStored(b *testing.B, s *testenv.System) uint64 {
	b.Helper()
	st, err := s.JS.Stream(context.Background(), schemas.StreamEvents)
	if err != nil {
		b.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter("fleetjob.event.audit.>"))
	if err != nil {
		b.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// background are the buckets written while jobs run but not by them: the
// agents' heartbeats (1,000 simulated agents, one each 5 s) and the
// sweeper's lease. They are listed apart and not counted per job.
var background = map[string]bool{"KV_" + schemas.BucketAgents: true, "KV_" + schemas.BucketLeases: true}

// total counts the messages of the streams a job writes.
func (c streamCounts) total() uint64 {
	var n uint64
	for name, v := range c {
		if !background[name] {
			n += v
		}
	}
	return n
}

// per lists, stream by stream, what was stored since before, per job:
// the streams that stored any, and LOGS always (a one-host job's short
// output rides in its result: LOGS 0); then the background's.
func (c streamCounts) per(before streamCounts, jobs int) string {
	var parts, bg []string
	for _, name := range slices.Sorted(maps.Keys(c)) {
		d := c[name] - before[name]
		f := fmt.Sprintf("%s %.2f", name, float64(d)/float64(jobs))
		switch {
		case background[name]:
			bg = append(bg, f)
		case d > 0 || name == schemas.StreamLogs:
			parts = append(parts, f)
		}
	}
	return strings.Join(parts, ", ") + "; not counted, written meanwhile by agents' heartbeats and the sweeper's lease: " + strings.Join(bg, ", ")
}

func storedByStream(b *testing.B, s *testenv.System) streamCounts {
	b.Helper()
	c := streamCounts{}
	streams := s.JS.ListStreams(context.Background())
	for info := range streams.Info() {
		if info.Config.Name != "BENCHRAW" {
			c[info.Config.Name] = info.State.LastSeq
		}
	}
	if err := streams.Err(); err != nil {
		b.Fatal(err)
	}
	return c
}
