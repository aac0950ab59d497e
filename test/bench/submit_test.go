package bench

// The submission benchmarks: POST /v1/jobs alone, beside octans /api/run
// and bare HTTP, and with workers running.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/fleetjob/fleetjob/api/native"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
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
	var out native.SubmitResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 202 {
		return 0, fmt.Errorf("submit: %d %v", resp.StatusCode, err)
	}
	return out.ID, nil
}

// BenchmarkSubmit measures POST /v1/jobs from 64 concurrent clients (the
// API validates, publishes one command and waits for its ack, caches the
// job as queued), with no workers draining the stream, beside raw
// JetStream publish-with-ack of the same body at the same concurrency to a
// stream with the JOBS stream's settings, in the same run.
func BenchmarkSubmit(b *testing.B) {
	const clients, total = 64, 20000
	s := testenv.Start(b, testenv.Options{})
	body := jobBody("127.0.0.1")
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	client := &http.Client{Transport: tr}
	rawSubj := rawStream(b, s)
	for b.Loop() {
		stop := profileWindow(b, "")
		api := perSecond(b, clients, total, func() error {
			_, err := post(client, s, body)
			return err
		})
		stop()
		var seq atomic.Int64
		stop = profileWindow(b, "octans")
		octans := perSecond(b, clients, total, func() error {
			return octansRun(client, s, fmt.Sprintf("bench-%d", seq.Add(1)))
		})
		stop()
		raw := rawPublish(b, s, rawSubj, body, clients, total)
		floor := httpFloor(b, client, body, clients, total)
		b.ReportMetric(api, "submits/s")
		b.ReportMetric(raw, "raw-js-pubs/s")
		b.ReportMetric(floor, "bare-http/s")
		b.ReportMetric(api/raw, "ratio")
		record(b, row{"submit, POST /v1/jobs, 64 clients", rate(api, "/s"),
			rate(raw, "/s") + " (raw JetStream publish-with-ack, 64 clients)",
			fmt.Sprintf("%.2f", api/raw), ">= 0.4", metYes(api/raw >= 0.4)})
		// a submission is at least HTTP and one durable publish
		byParts := machineCap(floor, raw) / floor
		b.ReportMetric(byParts, "cap-ratio")
		record(b, row{"submit, the same, beside bare HTTP", rate(api, "/s"),
			rate(floor, "/s") + " (echo decoding the same body and answering 202, nothing stored; same client)",
			fmt.Sprintf("%.2f", api/floor), ">= 0.8",
			capped(api/floor >= 0.8, fmt.Sprintf("%.2f", byParts), "bare HTTP + 1 raw publish, nothing else")})
		b.ReportMetric(octans, "octans-runs/s")
		record(b, row{"octans POST /api/run (a new task name each), 64 clients", rate(octans, "/s"),
			rate(api, "/s") + " (POST /v1/jobs above, same run)",
			fmt.Sprintf("%.2f", octans/api), ">= 0.8", metYes(octans/api >= 0.8)})
	}
}

// BenchmarkSubmitWithWorkers measures POST /v1/jobs from 64 clients on a
// whole system (two in-process workers taking every job, the status cache
// written, the sweeper running), beside the same submissions to an API
// with no workers, in the same run: what the rest of the system costs the
// API on the same two cores.
func BenchmarkSubmitWithWorkers(b *testing.B) {
	const clients, total = 64, 20000
	alone := testenv.Start(b, testenv.Options{})
	whole := testenv.Start(b, testenv.Options{Workers: 2})
	body := jobBody("10.250.0.1") // no agent: every job waits, as queued work does
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	client := &http.Client{Transport: tr}
	rawSubj := rawStream(b, whole)
	for b.Loop() {
		floor := perSecond(b, clients, total, func() error { _, err := post(client, alone, body); return err })
		before := storedByStream(b, whole)
		stop := profileWindow(b, "")
		ours := perSecond(b, clients, total, func() error { _, err := post(client, whole, body); return err })
		stop()
		// what the workers store for each job (its state, its events, its
		// task) once the last submission is taken: the API's own command
		// is the API alone's figure already
		writes := -1.0
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(250 * time.Millisecond) {
			w := float64(storedByStream(b, whole).total()-before.total())/total - 1
			if w == writes {
				break // nothing stored for 250 ms: every job taken
			}
			if time.Now().After(deadline) {
				b.Fatalf("the workers still storing a minute after the submissions (%.2f writes a job)", w)
			}
			writes = w
		}
		raw := rawPublish(b, whole, rawSubj, body, clients, total)
		byParts := machineCap(floor, raw/writes) / floor
		b.ReportMetric(ours, "submits/s")
		b.ReportMetric(floor, "api-alone/s")
		b.ReportMetric(writes, "worker-writes/job")
		record(b, row{"submit, POST /v1/jobs, 64 clients, workers running", rate(ours, "/s"),
			rate(floor, "/s") + " (the same to an API with no workers, same run)",
			fmt.Sprintf("%.2f", ours/floor), ">= 0.8",
			capped(ours/floor >= 0.8, fmt.Sprintf("%.2f", byParts),
				fmt.Sprintf("the API alone + the workers' %.2f raw publishes a job (%s raw), nothing else", writes, rate(raw, "/s")))})
	}
}

// octansRun runs a one-node octans task named name as the admin.
func octansRun(client *http.Client, s *testenv.System, name string) error {
	body := fmt.Sprintf(`{"nodes":["127.0.0.1"],"user":"root","name":%q,"tasks":"true"}`, name)
	req, _ := http.NewRequest("POST", s.APIURL+"/api/run", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var out struct {
		Code int `json:"code"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || out.Code != 0 {
		return fmt.Errorf("octans run: %d %d %v", resp.StatusCode, out.Code, err)
	}
	return nil
}

// rawStream creates a stream with the JOBS stream's settings on other
// subjects and returns a subject of it, for raw publish baselines.
func rawStream(b *testing.B, s *testenv.System) string {
	b.Helper()
	for _, sc := range s.P.Top.Streams() {
		if sc.Name != schemas.StreamJobs {
			continue
		}
		sc.Name, sc.Subjects, sc.Description = "BENCHRAW", []string{"bench.raw.>"}, "raw publish baseline"
		if _, err := s.JS.CreateStream(context.Background(), sc); err != nil {
			b.Fatal(err)
		}
		return "bench.raw.submit"
	}
	b.Fatal("no JOBS stream in the topology")
	return ""
}

// httpFloor is what HTTP alone costs on this machine: an echo server that
// decodes the same JSON body and answers 202, with the same client and
// concurrency as BenchmarkSubmit, storing nothing.
func httpFloor(b *testing.B, client *http.Client, body []byte, clients, total int) float64 {
	b.Helper()
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.POST("/v1/jobs", func(c echo.Context) error {
		var v map[string]any
		if err := json.NewDecoder(c.Request().Body).Decode(&v); err != nil {
			return err
		}
		return c.JSON(http.StatusAccepted, native.SubmitResponse{ID: 1, Status: "waiting"})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: e}
	go srv.Serve(ln)
	defer srv.Close()
	target := &testenv.System{APIURL: "http://" + ln.Addr().String(), Token: "x"}
	return perSecond(b, clients, total, func() error {
		_, err := post(client, target, body)
		return err
	})
}
