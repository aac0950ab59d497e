// Package fuzzcore builds what the surfaces' fuzz tests drive: the real
// api.Core, the real surfaces and their real decoders, over in-memory
// stand-ins for JetStream and the status cache. It is for fuzz tests only:
// the property under test is the decoding and the answer to bad input,
// which come before anything would reach NATS (test/ runs the same routes
// against real NATS and Redis). The stand-ins hold one job (id JobID, of
// scope biz:1, running on HostIP; FileJobID, a file step) and one agent on
// HostIP, so reads find something to answer from.
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

// The stand-ins' jobs (a script job and a file job, both running), their
// host and the agent's BlueKing host id.
const (
	JobID     = 1
	FileJobID = 2
	HostIP    = "10.0.0.1"
	HostID    = 101
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
	now := time.Now().UTC()
	js := &jobs{now: now, specs: map[int64]*schemas.JobSpec{}, states: map[int64]*schemas.JobState{}}
	for id, step := range map[int64]schemas.Step{
		JobID: {Script: &schemas.Script{Content: "echo hi"}},
		FileJobID: {File: &schemas.FileSpec{Destination: "/opt/app", Sources: []schemas.FileSource{
			{Hosts: []schemas.Host{{IP: HostIP}}, Paths: []string{"/srv/a.txt"}}}}},
	} {
		spec := &schemas.JobSpec{Name: "fuzz", Surface: "bkjob", Scope: &schemas.Scope{Type: "biz", ID: "1"},
			Targets: []schemas.Host{{IP: HostIP}}, Extra: map[string]string{"bk_task_type": "1"}, Steps: []schemas.Step{step}}
		if step.File != nil {
			spec.Extra["bk_task_type"] = "2"
		}
		if err := spec.Normalize(); err != nil {
			tb.Fatal(err)
		}
		st := schemas.NewJobState(id, spec, now)
		st.Status = schemas.JobRunning
		js.specs[id], js.states[id] = spec, st
	}
	rec := &Recorder{}
	core := api.NewCore(Token, api.Deps{
		Publisher: rec, Claims: &claims{m: map[string]api.ClaimHolder{}}, Jobs: js, Search: js,
		Logs: logs{}, Callbacks: js, DeadLetters: js, Agents: agents{},
		Risk: risk, Registry: prometheus.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
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

// jobs is the status cache's stand-in: two jobs.
type jobs struct {
	now    time.Time
	specs  map[int64]*schemas.JobSpec
	states map[int64]*schemas.JobState
}

func (j *jobs) row(phase string) schemas.HostRow {
	return schemas.HostRow{HostResult: schemas.HostResult{Host: schemas.Host{IP: HostIP}, Status: schemas.HostRunning,
		Phase: phase, Attempt: 1, StartedAt: j.now, AgentID: "a1"}}
}

func notFound(id int64) error { return schemas.NotFound("job %d not found", id) }

func (j *jobs) Job(_ context.Context, id int64) (schemas.JobSummary, error) {
	spec, ok := j.specs[id]
	if !ok {
		return schemas.JobSummary{}, notFound(id)
	}
	return schemas.JobSummary{ID: id, Name: spec.Name, Status: j.states[id].Status, Surface: spec.Surface,
		CreatedAt: j.now, UpdatedAt: j.now, TotalHosts: 1, Counts: map[string]int{"running": 1},
		Steps: []schemas.StepSummary{{Type: spec.Steps[0].Type, Status: schemas.JobRunning}}}, nil
}

func (j *jobs) Load(_ context.Context, id int64) (*schemas.JobSpec, *schemas.JobState, error) {
	spec, ok := j.specs[id]
	if !ok {
		return nil, nil, notFound(id)
	}
	return spec, j.states[id], nil
}

func (j *jobs) Hosts(_ context.Context, id int64) ([]schemas.HostRow, error) {
	spec, ok := j.specs[id]
	if !ok {
		return nil, notFound(id)
	}
	if spec.Steps[0].File != nil {
		return []schemas.HostRow{j.row(schemas.PhaseUpload), j.row("")}, nil
	}
	return []schemas.HostRow{j.row("")}, nil
}

func (j *jobs) Results(_ context.Context, id int64, step int, phase string, idx []int) (map[int]schemas.HostResult, error) {
	out := map[int]schemas.HostResult{}
	if _, ok := j.specs[id]; ok && step == 0 {
		for _, i := range idx {
			if i == 0 {
				out[0] = j.row(phase).HostResult
			}
		}
	}
	return out, nil
}

func (j *jobs) UploadResults(_ context.Context, id int64, step, units int) (map[int]schemas.HostResult, error) {
	out := map[int]schemas.HostResult{}
	if spec, ok := j.specs[id]; ok && step == 0 && spec.Steps[0].File != nil && units > 0 {
		out[0] = j.row(schemas.PhaseUpload).HostResult
	}
	return out, nil
}

func (j *jobs) summaries() []schemas.JobSummary {
	var out []schemas.JobSummary
	for _, id := range []int64{FileJobID, JobID} {
		sum, _ := j.Job(context.Background(), id)
		out = append(out, sum)
	}
	return out
}

func (j *jobs) List(context.Context, api.JobQuery) ([]schemas.JobSummary, int, error) {
	return j.summaries(), len(j.specs), nil
}

func (j *jobs) HostJobs(_ context.Context, h schemas.Host, _ int) ([]int64, error) {
	if h.IP == HostIP {
		return []int64{FileJobID, JobID}, nil
	}
	return nil, nil
}

func (j *jobs) JobsBefore(_ context.Context, below int64, _ int) ([]schemas.JobSummary, int64, error) {
	var out []schemas.JobSummary
	for _, sum := range j.summaries() {
		if sum.ID < below {
			out = append(out, sum)
		}
	}
	return out, 0, nil
}

func (j *jobs) Facts(_ context.Context, ids []int64) (map[int64]api.JobFacts, error) {
	out := map[int64]api.JobFacts{}
	for _, id := range ids {
		if spec, ok := j.specs[id]; ok {
			out[id] = api.JobFacts{Scope: spec.Scope, StepTypes: []string{spec.Steps[0].Type}, Extra: spec.Extra}
		}
	}
	return out, nil
}

func (j *jobs) JobsOnHosts(_ context.Context, hosts []schemas.Host, ids []int64) (map[int64]bool, error) {
	out := map[int64]bool{}
	for _, h := range hosts {
		for _, id := range ids {
			if _, ok := j.specs[id]; ok && h.IP == HostIP {
				out[id] = true
			}
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
