// Package bench measures fleetjob on this machine: go test -bench . (or
// make bench). Each benchmark prints its figures with b.ReportMetric;
// nothing here asserts on speed.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
)

func jobBody(targets ...string) []byte {
	b, _ := json.Marshal(map[string]any{
		"name": "bench", "targets": targets,
		"steps": []any{map[string]any{"script": map[string]any{"content": "true"}}},
	})
	return b
}

func post(client *http.Client, s *testenv.System, body []byte) (int64, error) {
	req, _ := http.NewRequest("POST", s.APIURL+"/v1/jobs", strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+s.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out api.SubmitResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 202 {
		return 0, fmt.Errorf("submit: %d %v", resp.StatusCode, err)
	}
	return out.ID, nil
}

// BenchmarkSubmit measures POST /v1/jobs from 64 concurrent clients (the
// API validates, publishes one command and waits for its ack, caches the
// job as queued), with no workers draining the stream, beside raw
// JetStream publish-with-ack at the same concurrency in the same run.
func BenchmarkSubmit(b *testing.B) {
	const clients, total = 64, 6000
	s := testenv.Start(b, testenv.Options{})
	body := jobBody("127.0.0.1")
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	client := &http.Client{Transport: tr}
	for b.Loop() {
		var n atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range clients {
			wg.Go(func() {
				for n.Add(1) <= total {
					if _, err := post(client, s, body); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		api := float64(total) / time.Since(start).Seconds()

		n.Store(0)
		start = time.Now()
		for range clients {
			wg.Go(func() {
				for n.Add(1) <= total {
					if _, err := s.JS.Publish(context.Background(), "fleetjob.cmd.bench", body); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		raw := float64(total) / time.Since(start).Seconds()
		b.ReportMetric(api, "submits/s")
		b.ReportMetric(raw, "raw-js-pubs/s")
		b.ReportMetric(api/raw, "ratio")
	}
}

// BenchmarkStartLatency measures, on an idle system, the time from the
// POST of a one-host job to the agent starting its script (the agent's own
// start timestamp), one job at a time.
func BenchmarkStartLatency(b *testing.B) {
	const jobs = 200
	s := testenv.Start(b, testenv.Options{Workers: 2, Agents: []string{"a1=127.0.0.1"}})
	client := &http.Client{}
	body := jobBody("127.0.0.1")
	for b.Loop() {
		lat := make([]time.Duration, 0, jobs)
		for range jobs {
			t0 := time.Now()
			id, err := post(client, s, body)
			if err != nil {
				b.Fatal(err)
			}
			var h api.HostView
			testenv.Eventually(b, 30*time.Second, func() bool {
				var out api.ListResponse[api.HostView]
				s.JSON(b, "GET", fmt.Sprintf("/v1/jobs/%d/hosts", id), nil, nil, &out)
				if len(out.Items) == 1 && out.Items[0].Status.Final() {
					h = out.Items[0]
					return true
				}
				return false
			}, "job %d", id)
			lat = append(lat, h.StartedAt.Sub(t0))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
}

// BenchmarkFanOut200 measures one `true` script on 200 agents (in-process
// agents with separate identities, each running real bash): from the POST
// to the job.finished event.
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
		sub.Unsubscribe()
		var sum schemas.JobSummary
		s.JSON(b, "GET", fmt.Sprintf("/v1/jobs/%d", id), nil, nil, &sum)
		if sum.Counts["success"] != n {
			b.Fatalf("got %v, want %d successes", sum.Counts, n)
		}
		b.ReportMetric(el.Seconds(), "s/200-hosts")
	}
}

// BenchmarkFileDistribution measures a file step sending one 64 MiB file
// from one source to 10 targets (in-process agents on loopback, the real
// upload/download code with SHA-256 checks and fsync), beside the raw
// Object Store doing the same in the same run: one Put, then 10 parallel
// Gets. Both rates are bytes delivered to all targets per second.
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
	client := &http.Client{}
	for b.Loop() {
		// raw: one put, ten parallel gets
		start := time.Now()
		if _, err := obs.PutBytes(ctx, "bench/raw", data); err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		for range targets {
			wg.Go(func() {
				gctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
				defer cancel()
				r, err := obs.Get(gctx, "bench/raw")
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
	for b.Loop() {
		// the floor: 10,000 responders spread over 100 connections (as
		// agents would be spread over processes), one request, all replies
		inbox := nats.NewInbox()
		replies := make(chan struct{}, n)
		rsub, _ := s.NC.Subscribe(inbox, func(*nats.Msg) { replies <- struct{}{} })
		var conns []*nats.Conn
		for range 100 {
			nc, err := nats.Connect(s.NATSURL)
			if err != nil {
				b.Fatal(err)
			}
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
		sub.Unsubscribe()
		var sum schemas.JobSummary
		s.JSON(b, "GET", fmt.Sprintf("/v1/jobs/%d", id), nil, nil, &sum)
		if sum.Counts["success"] != n {
			b.Fatalf("got %v, want %d successes", sum.Counts, n)
		}
		b.ReportMetric(el.Seconds(), "s/10k-hosts")
		b.ReportMetric(floor.Seconds(), "s-core-nats-floor")
		b.ReportMetric(el.Seconds()/floor.Seconds(), "x-floor")
	}
}

// BenchmarkJobsPerSecond measures single-host jobs end to end at steady
// state: 64 clients submit 5,000 one-host jobs over 1,000 simulated agents;
// the figure is jobs finished (job.finished events) per second from the
// first POST to the last event.
func BenchmarkJobsPerSecond(b *testing.B) {
	const clients, jobs, hostsN = 64, 5000, 1000
	s := testenv.Start(b, testenv.Options{Workers: 2})
	first := netip.MustParseAddr("10.220.0.1")
	s.StartSimulator(b, "simj", hostsN, first.String())
	bodies := make([][]byte, hostsN)
	for i := range hostsN {
		bodies[i] = jobBody(agent.SimulatedIP(first, i).String())
	}
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	client := &http.Client{Transport: tr}
	for b.Loop() {
		var finished atomic.Int64
		all := make(chan struct{})
		sub, err := s.NC.Subscribe(events.Subject(events.JobFinished, "*"), func(*nats.Msg) {
			if finished.Add(1) == jobs {
				close(all)
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		var n atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range clients {
			wg.Go(func() {
				for i := n.Add(1); i <= jobs; i = n.Add(1) {
					if _, err := post(client, s, bodies[int(i)%hostsN]); err != nil {
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
			b.Fatalf("%d of %d jobs finished", finished.Load(), jobs)
		}
		el := time.Since(start)
		sub.Unsubscribe()
		b.ReportMetric(float64(jobs)/el.Seconds(), "jobs/s")
		b.ReportMetric(float64(jobs)/submitted.Seconds(), "submits/s")
	}
}
