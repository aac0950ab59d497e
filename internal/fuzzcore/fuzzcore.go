// Package fuzzcore builds what the surfaces' fuzz tests drive: the real
// api.Core, the real surfaces and their real decoders, over in-memory
// stand-ins for JetStream and the status cache. It is for fuzz tests only:
// the property under test is the decoding and the answer to bad input,
// which come before anything would reach NATS (test/ runs the same routes
// against real NATS and Redis). The stand-ins hold one job (id JobID, of
// scope biz:1, running on Host) and one agent on Host, so reads find
// something to answer from.
package fuzzcore

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/api/riskrules"
	"github.com/fleetjob/fleetjob/schemas"
)

// Token is the admin credential of the core (bearer token, BlueKing app
// secret). The auth rework changes how surfaces take credentials: this
// package and Surfaces are the one place to adjust.
const Token = "fuzz-admin-token"

// The stand-ins' one job, its host and the agent's BlueKing host id.
const (
	JobID  = 1
	HostIP = "10.0.0.1"
	HostID = 101
)

// Recorder counts the commands the core publishes, in place of JetStream.
type Recorder struct {
	mu  sync.Mutex
	seq uint64
}

// Publish records one command.
func (r *Recorder) Publish(context.Context, string, []byte, string) (uint64, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	return r.seq + JobID, false, nil
}

// Count is the number of commands published so far.
func (r *Recorder) Count() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seq
}

// Core returns a core over the stand-ins, with the shipped high-risk rules,
// and the recorder of what it publishes.
func Core(tb testing.TB) (*api.Core, *Recorder) {
	tb.Helper()
	risk, err := riskrules.New(riskrules.Defaults())
	if err != nil {
		tb.Fatal(err)
	}
	spec := &schemas.JobSpec{Name: "fuzz", Surface: "bkjob", Scope: &schemas.Scope{Type: "biz", ID: "1"},
		Targets: []schemas.Host{{IP: HostIP}}, Extra: map[string]string{"bk_task_type": "1"},
		Steps: []schemas.Step{{Script: &schemas.Script{Content: "echo hi"}}}}
	if err := spec.Normalize(); err != nil {
		tb.Fatal(err)
	}
	now := time.Now().UTC()
	st := schemas.NewJobState(JobID, spec, now)
	st.Status = schemas.JobRunning
	rec := &Recorder{}
	reg := prometheus.NewRegistry()
	jobs := &jobs{spec: spec, state: st, now: now}
	core := api.NewCore(Token, api.Deps{
		Publisher: rec, Claims: &claims{m: map[string]api.ClaimHolder{}}, Jobs: jobs, Search: jobs,
		Logs: logs{}, Callbacks: jobs, DeadLetters: jobs, Agents: agents{},
		Risk: risk, Registry: reg, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	return core, rec
}

// Handler serves surfaces as the API server does (its middleware, its
// error routing).
func Handler(core *api.Core, surfaces ...api.Surface) http.Handler {
	return api.New(core.Log, prometheus.NewRegistry(), nil, surfaces...).Handler()
}

// Do sends one request to h and returns the recorded answer. target is a
// request URI (path and query); one that does not parse is no request a
// client could send, and Do answers nil.
func Do(h http.Handler, method, target, contentType string, body []byte, header http.Header) *httptest.ResponseRecorder {
	if _, err := url.ParseRequestURI(target); err != nil || !strings.HasPrefix(target, "/") ||
		strings.ContainsFunc(target, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return nil
	}
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

type claims struct {
	mu sync.Mutex
	m  map[string]api.ClaimHolder
}

func (c *claims) Claim(_ context.Context, key string, id int64, fp string) (api.ClaimHolder, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.m[key]; ok {
		return h, nil
	}
	c.m[key] = api.ClaimHolder{ID: id, Fingerprint: fp}
	return c.m[key], nil
}

func (c *claims) Lookup(_ context.Context, key string) (api.ClaimHolder, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.m[key]
	return h, ok, nil
}

// jobs is the status cache's stand-in: one job.
type jobs struct {
	spec  *schemas.JobSpec
	state *schemas.JobState
	now   time.Time
}

func (j *jobs) row() schemas.HostRow {
	return schemas.HostRow{HostResult: schemas.HostResult{Host: schemas.Host{IP: HostIP}, Status: schemas.HostRunning,
		Attempt: 1, StartedAt: j.now, AgentID: "a1"}}
}

func (j *jobs) Job(_ context.Context, id int64) (schemas.JobSummary, error) {
	if id != JobID {
		return schemas.JobSummary{}, schemas.NotFound("job %d not found", id)
	}
	return schemas.JobSummary{ID: id, Name: j.spec.Name, Status: j.state.Status, Surface: j.spec.Surface,
		CreatedAt: j.now, UpdatedAt: j.now, TotalHosts: 1, Counts: map[string]int{"running": 1},
		Steps: []schemas.StepSummary{{Type: schemas.StepScript, Status: schemas.JobRunning}}}, nil
}

func (j *jobs) Load(_ context.Context, id int64) (*schemas.JobSpec, *schemas.JobState, error) {
	if id != JobID {
		return nil, nil, schemas.NotFound("job %d not found", id)
	}
	return j.spec, j.state, nil
}

func (j *jobs) Hosts(_ context.Context, id int64) ([]schemas.HostRow, error) {
	if id != JobID {
		return nil, schemas.NotFound("job %d not found", id)
	}
	return []schemas.HostRow{j.row()}, nil
}

func (j *jobs) Results(_ context.Context, id int64, step int, _ string, idx []int) (map[int]schemas.HostResult, error) {
	out := map[int]schemas.HostResult{}
	if id == JobID && step == 0 {
		for _, i := range idx {
			if i == 0 {
				out[0] = j.row().HostResult
			}
		}
	}
	return out, nil
}

func (j *jobs) UploadResults(context.Context, int64, int, int) (map[int]schemas.HostResult, error) {
	return map[int]schemas.HostResult{}, nil
}

func (j *jobs) List(_ context.Context, q api.JobQuery) ([]schemas.JobSummary, int, error) {
	sum, _ := j.Job(context.Background(), JobID)
	return []schemas.JobSummary{sum}, 1, nil
}

func (j *jobs) HostJobs(_ context.Context, h schemas.Host, _ int) ([]int64, error) {
	if h.IP == HostIP {
		return []int64{JobID}, nil
	}
	return nil, nil
}

func (j *jobs) JobsBefore(_ context.Context, below int64, _ int) ([]schemas.JobSummary, int64, error) {
	if below > JobID {
		sum, _ := j.Job(context.Background(), JobID)
		return []schemas.JobSummary{sum}, 0, nil
	}
	return nil, 0, nil
}

func (j *jobs) Facts(_ context.Context, ids []int64) (map[int64]api.JobFacts, error) {
	out := map[int64]api.JobFacts{}
	for _, id := range ids {
		if id == JobID {
			out[id] = api.JobFacts{Scope: j.spec.Scope, StepTypes: []string{schemas.StepScript}, Extra: j.spec.Extra}
		}
	}
	return out, nil
}

func (j *jobs) JobsOnHosts(_ context.Context, hosts []schemas.Host, ids []int64) (map[int64]bool, error) {
	out := map[int64]bool{}
	for _, h := range hosts {
		if h.IP == HostIP {
			out[JobID] = true
		}
	}
	return out, nil
}

func (j *jobs) Callback(context.Context, int64) (schemas.CallbackRecord, bool, error) {
	return schemas.CallbackRecord{}, false, nil
}

func (j *jobs) DeadLetters(context.Context) ([]schemas.DeadLetter, error) { return nil, nil }

type logs struct{}

func (logs) Read(_ context.Context, _ schemas.LogRef, from, limit int) (schemas.LogPage, error) {
	lines := []string{"hello", "world"}
	from = min(max(from, 0), len(lines))
	to := min(from+max(limit, 0), len(lines))
	return schemas.LogPage{From: from, To: to, Total: len(lines), Lines: lines[from:to]}, nil
}

type agents struct{}

func (agents) All() []schemas.AgentInfo {
	return []schemas.AgentInfo{{ID: "a1", IP: HostIP, HostID: HostID, LastSeen: time.Now()}}
}

func (agents) TTL() time.Duration { return time.Minute }
