package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/api/native"
	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/internal/roles"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
)

// startAgents runs n real agents in the test process (the agent code
// testenv.StartAgent runs, slots 64), each with its own NATS connection as
// on a real host, started 32 at a time, and waits until every one is
// registered and has its task consumer. Unlike testenv.StartAgent (which
// shares the system's one connection, waits for each agent in turn and
// heartbeats every second) they keep the agent's default heartbeat (5 s),
// as 1,000 real hosts would. With FLEETJOB_BENCH_SHARED_CONN set they share
// the system's connection instead, as testenv's agents do. It returns the
// IPs.
func startAgents(b *testing.B, s *testenv.System, prefix string, n int, ip func(i int) string) []string {
	b.Helper()
	m := agent.NewMetrics(prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var conns []*nats.Conn
	b.Cleanup(func() {
		cancel()
		wg.Wait()
		for _, nc := range conns {
			nc.Close()
		}
	})
	shared := os.Getenv("FLEETJOB_BENCH_SHARED_CONN") != ""
	sem := make(chan struct{}, 32)
	ips := make([]string, n)
	for i := range n {
		ips[i] = ip(i)
		cfg := agent.Config{
			ID: fmt.Sprintf("%s%d", prefix, i), IP: ips[i], Version: "bench",
			DataDir: filepath.Join(s.Dir, fmt.Sprintf("agent-%s%d", prefix, i)),
			Slots:   64, ShutdownGrace: 2 * time.Second, Topology: s.P.Top,
		}
		s.Enrol(b, cfg.ID, ips[i], cfg.DataDir, "")
		p := s.P
		if !shared {
			// its own identity, as a real agent (AgentConn makes its consumer)
			nc := s.AgentConn(b, cfg.ID, nats.MaxReconnects(-1))
			conns = append(conns, nc)
			var err error
			if p.JS, err = jetstream.New(nc); err != nil {
				b.Fatal(err)
			}
			p.NC = nc
		} else if err := natsauth.PrepareAgent(ctx, s.JS, s.P.Top, cfg.ID, cfg.Slots); err != nil {
			b.Fatal(err)
		}
		sem <- struct{}{}
		wg.Go(func() {
			if err := roles.RunAgent(ctx, p, cfg, m); err != nil && ctx.Err() == nil {
				b.Errorf("agent %s: %v", cfg.ID, err)
			}
		})
		// the next one starts once this one's consumer exists
		go func(id string) {
			defer func() { <-sem }()
			for ctx.Err() == nil {
				if _, err := s.JS.Consumer(ctx, schemas.StreamTasks, schemas.AgentConsumer(id)); err == nil {
					return
				}
				time.Sleep(5 * time.Millisecond) // polling; ctx bounds it, and the wait for the agents below
			}
		}(cfg.ID)
	}
	// the agents stop before their connections close (each connection's
	// own cleanup, registered in the loop, runs before this one would
	// otherwise): an agent whose connection closes under it reports that
	b.Cleanup(func() { cancel(); wg.Wait() })
	testenv.Eventually(b, 5*time.Minute, func() bool {
		var out struct {
			Total int `json:"total"`
		}
		code, err := getJSON(http.DefaultClient, s, "/v1/agents?online=true", &out)
		return err == nil && code == 200 && out.Total >= n
	}, "%d agents online", n)
	return ips
}

// BenchmarkRealAgents1000 measures one `true` script on 1,000 real agents
// (in-process, each running real bash) with the job's default concurrency
// (all at once), from the POST until GET /v1/jobs/{id} shows the job
// final with every result recorded, beside a bare Go program spawning the
// same 1,000 `bash -c true` processes with the same parallelism (1,000 at
// once) in the same run, just before and just after (their mean). It also
// reports what starting the agents cost, and, by the agents' own
// timestamps, when the first and the last script started and the last one
// ended.
func BenchmarkRealAgents1000(b *testing.B) {
	const n = 1000
	s := testenv.Start(b, testenv.Options{Workers: 2})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	t0 := time.Now()
	ips := startAgents(b, s, "r", n, func(i int) string { return fmt.Sprintf("127.0.%d.%d", 2+i/250, 1+i%250) })
	setup := time.Since(t0)
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	goroutines := runtime.NumGoroutine() - g0
	conn := "a NATS connection each"
	if os.Getenv("FLEETJOB_BENCH_SHARED_CONN") != "" {
		conn = "one shared NATS connection"
	}
	record(b, row{"setup: start 1,000 in-process agents (what it costs)", fmt.Sprintf("%.1f s", setup.Seconds()),
		fmt.Sprintf("heap +%s, +%d goroutines, %s", bytesStr(heap), goroutines, conn), noGoal, noGoal, noGoal})

	client := &http.Client{}
	body := jobBody(ips...)
	for b.Loop() {
		bare1 := spawnBash(b, n, n)
		stop := profileWindow(b, "")
		start := time.Now()
		id, err := post(client, s, body)
		if err != nil {
			b.Fatal(err)
		}
		sum := waitFinal(b, s, client, id, 5*time.Minute)
		el := time.Since(start)
		stop()
		// the machine is shared: the limit is measured before and after,
		// and their mean is used
		bare2 := spawnBash(b, n, n)
		bare := (bare1 + bare2) / 2
		if sum.Counts["success"] != n {
			b.Fatalf("job %d %s %v, want %d successes", id, sum.Status, sum.Counts, n)
		}
		r := el.Seconds() / bare.Seconds()
		// where the time went, by the agents' own timestamps
		var hosts native.ListResponse[native.HostView]
		if _, err := getJSON(client, s, fmt.Sprintf("/v1/jobs/%d/hosts?size=%d", id, n), &hosts); err != nil || len(hosts.Items) != n {
			b.Fatalf("hosts of job %d: %d rows, %v", id, len(hosts.Items), err)
		}
		var first, last, end time.Time
		for _, h := range hosts.Items {
			if first.IsZero() || h.StartedAt.Before(first) {
				first = h.StartedAt
			}
			if h.StartedAt.After(last) {
				last = h.StartedAt
			}
			if h.EndedAt.After(end) {
				end = h.EndedAt
			}
		}
		b.ReportMetric(first.Sub(start).Seconds(), "s-first-start")
		b.ReportMetric(last.Sub(start).Seconds(), "s-last-start")
		b.ReportMetric(end.Sub(start).Seconds(), "s-last-end")
		b.ReportMetric(setup.Seconds(), "s-to-start-agents")
		b.ReportMetric(heap/n, "heap-B/agent")
		b.ReportMetric(float64(goroutines)/n, "goroutines/agent")
		b.ReportMetric(el.Seconds(), "s/1000-hosts")
		b.ReportMetric(bare1.Seconds(), "s-bare-spawn-before")
		b.ReportMetric(bare2.Seconds(), "s-bare-spawn-after")
		b.ReportMetric(r, "ratio")
		record(b, row{"fan-out, `true` on 1,000 in-process real agents", fmt.Sprintf("%.2f s", el.Seconds()),
			fmt.Sprintf("%.2f s (Go spawning 1,000 `bash -c true`, 1,000 at once)", bare.Seconds()),
			fmt.Sprintf("%.2f", r), "<= 1.5 (issue 11)", metYes(r <= 1.5)})
		deliver := consumerFanOut(b, s, n)
		b.ReportMetric(deliver.Seconds(), "s-deliver-1000-consumers")
		// by the agents' clocks: submit → the last script started, which
		// holds the delivery (and each agent's spawning of bash)
		toLast := last.Sub(start)
		record(b, row{"… submit → the last script started (delivery and spawning)", fmt.Sprintf("%.2f s", toLast.Seconds()),
			fmt.Sprintf("%.2f s (raw JetStream: one message to each of 1,000 durable pull consumers, acked)", deliver.Seconds()),
			fmt.Sprintf("%.1f×", toLast.Seconds()/deliver.Seconds()), noGoal, noGoal})
	}
}

// consumerFanOut is the least it costs to hand one task to each of n
// agents the way fleetjob does: one message each, on its own subject of a
// work-queue stream, to n durable pull consumers (on one connection here),
// from the first publish to the last delivery.
func consumerFanOut(b *testing.B, s *testenv.System, n int) time.Duration {
	b.Helper()
	ctx := context.Background()
	if _, err := s.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCHFAN", Subjects: []string{"bench.fan.>"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	defer s.JS.DeleteStream(ctx, "BENCHFAN")
	got := make(chan struct{}, n)
	consumers := make([]jetstream.Consumer, n)
	for i := range n {
		c, err := s.JS.CreateOrUpdateConsumer(ctx, "BENCHFAN", jetstream.ConsumerConfig{
			Durable: fmt.Sprintf("fan%d", i), FilterSubject: fmt.Sprintf("bench.fan.%d.>", i), AckPolicy: jetstream.AckExplicitPolicy,
		})
		if err != nil {
			b.Fatal(err)
		}
		cc, err := c.Consume(func(m jetstream.Msg) { _ = m.Ack(); got <- struct{}{} }, jetstream.PullMaxMessages(64))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Stop()
		consumers[i] = c
	}
	testenv.Eventually(b, time.Minute, func() bool {
		for _, c := range consumers {
			if info, err := c.Info(ctx); err != nil || info.NumWaiting == 0 {
				return false
			}
		}
		return true
	}, "a pull request waiting on each of %d consumers", n)
	start := time.Now()
	for i := range n {
		if _, err := s.JS.PublishAsync(fmt.Sprintf("bench.fan.%d.1", i), []byte("task")); err != nil {
			b.Fatal(err)
		}
	}
	for range n {
		select {
		case <-got:
		case <-time.After(time.Minute):
			b.Fatal("messages not delivered to every consumer within a minute")
		}
	}
	return time.Since(start)
}
