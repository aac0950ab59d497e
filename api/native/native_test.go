package native

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/schemas"
)

// The fakes below stand in for JetStream and the registry: these tests are
// about routing, validation and the claim rules, which answer from what
// the core is handed. test/ runs the same routes against real NATS.

type fakePublisher struct {
	mu   sync.Mutex
	seq  uint64
	seen map[string]uint64
}

func (f *fakePublisher) Publish(_ context.Context, _ string, _ []byte, msgID string) (uint64, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.seen[msgID]; ok && msgID != "" {
		return s, true, nil
	}
	f.seq++
	if msgID != "" {
		f.seen[msgID] = f.seq
	}
	return f.seq, false, nil
}

type fakeClaims struct {
	mu sync.Mutex
	m  map[string]api.ClaimHolder
}

func (f *fakeClaims) Claim(_ context.Context, key string, id int64, fp string) (api.ClaimHolder, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if h, ok := f.m[key]; ok {
		return h, nil
	}
	f.m[key] = api.ClaimHolder{ID: id, Fingerprint: fp}
	return f.m[key], nil
}

func (f *fakeClaims) Lookup(_ context.Context, key string) (api.ClaimHolder, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.m[key]
	return h, ok, nil
}

type fakeAgents []schemas.AgentInfo

func (a fakeAgents) All() []schemas.AgentInfo { return a }
func (fakeAgents) TTL() time.Duration         { return time.Minute }

func testServer(t *testing.T) (http.Handler, *fakePublisher) {
	t.Helper()
	pub := &fakePublisher{seen: map[string]uint64{}}
	var agents fakeAgents
	for i := range 5 {
		agents = append(agents, schemas.AgentInfo{ID: fmt.Sprintf("a%d", 4-i), IP: fmt.Sprintf("10.0.0.%d", i+1), LastSeen: time.Now()})
	}
	reg, log := prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil))
	core := api.NewCore("tok", api.Deps{Publisher: pub, Claims: &fakeClaims{m: map[string]api.ClaimHolder{}},
		Agents: agents, Registry: reg, Log: log})
	return api.New(log, reg, nil, New(core)).Handler(), pub
}

func call(t *testing.T, h http.Handler, method, path, body string, hdr map[string]string) (int, http.Header, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer tok")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	return rec.Code, rec.Header(), out
}

func TestIdempotencyKeyReusedWithAnotherBodyIs422(t *testing.T) {
	h, pub := testServer(t)
	job := `{"targets":["10.0.0.1"],"steps":[{"script":{"content":"echo a"}}]}`
	key := map[string]string{"Idempotency-Key": "k1"}
	code, _, first := call(t, h, "POST", "/v1/jobs", job, key)
	if code != 202 {
		t.Fatalf("first: %d %v", code, first)
	}
	// the same request, spelt differently, is the same request
	same := `{"steps":[{"script":{"content":"echo a"}}],  "targets":["10.0.0.1"]}`
	if code, _, again := call(t, h, "POST", "/v1/jobs", same, key); code != 202 || again["id"] != first["id"] {
		t.Errorf("repeat: got %d %v, want 202 with id %v", code, again, first["id"])
	}
	other := strings.Replace(job, "echo a", "echo b", 1)
	code, hdr, p := call(t, h, "POST", "/v1/jobs", other, key)
	if code != 422 || hdr.Get("Content-Type") != "application/problem+json" || !strings.Contains(fmt.Sprint(p["detail"]), "Idempotency-Key") {
		t.Errorf("another body with the key: got %d %s %v, want a 422 problem", code, hdr.Get("Content-Type"), p)
	}
	if pub.seq != 1 {
		t.Errorf("%d commands published, want 1", pub.seq)
	}
}

func TestRoutingStatuses(t *testing.T) {
	h, _ := testServer(t)
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"DELETE", "/v1/jobs", 405},
		{"PUT", "/v1/jobs/1/stop", 405},
		{"GET", "/v1/nothing", 404},
		{"GET", "/v1/jobs/x", 400},
		{"POST", "/v1/jobs/1/steps/0/explode", 400},
	} {
		code, hdr, p := call(t, h, c.method, c.path, "", nil)
		if code != c.want || hdr.Get("Content-Type") != "application/problem+json" || p["status"] != float64(c.want) {
			t.Errorf("%s %s: got %d %s %v, want a %d problem", c.method, c.path, code, hdr.Get("Content-Type"), p, c.want)
		}
	}
	req := httptest.NewRequest("GET", "/v1/jobs", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 401 || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Errorf("no token: got %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
}

func TestAgentsArePaged(t *testing.T) {
	h, _ := testServer(t)
	code, _, p := call(t, h, "GET", "/v1/agents?page=2&size=2", "", nil)
	items, _ := p["items"].([]any)
	if code != 200 || p["total"] != float64(5) || p["page"] != float64(2) || p["size"] != float64(2) || len(items) != 2 {
		t.Fatalf("page 2 of 2: %d %v", code, p)
	}
	if id := items[0].(map[string]any)["id"]; id != "a2" {
		t.Errorf("page 2 starts with %v, want a2 (agents sorted by id)", id)
	}
	if code, _, p := call(t, h, "GET", "/v1/agents?size=0", "", nil); code != 400 {
		t.Errorf("size 0: %d %v", code, p)
	}
}

// Deny by default: a native surface built without a token (a
// misconfiguration) lets no request through, with or without a header.
func TestNoTokenConfiguredDeniesEverything(t *testing.T) {
	reg, log := prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil))
	core := api.NewCore("", api.Deps{Publisher: &fakePublisher{seen: map[string]uint64{}}, Registry: reg, Log: log})
	h := api.New(log, reg, nil, New(core)).Handler()
	for _, hdr := range []string{"", "Bearer ", "Bearer x"} {
		req := httptest.NewRequest("GET", "/v1/jobs", nil)
		if hdr != "" {
			req.Header.Set("Authorization", hdr)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 401 {
			t.Errorf("Authorization %q: %d, want 401", hdr, rec.Code)
		}
	}
}
