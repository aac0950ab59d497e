package native

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/internal/fuzzcore"
)

// The native surface under fuzzing: the real echo handler and decoders
// over fuzzcore's in-memory core (its Publisher only records: the property
// is the answer to the request, which comes before NATS would).

func fuzzHandler(f *testing.F) (http.Handler, *fuzzcore.Recorder) {
	core, rec := fuzzcore.Core(f)
	return fuzzcore.Handler(core, New(core)), rec
}

var bearer = http.Header{"Authorization": {"Bearer " + fuzzcore.Token}}

// checkProblem asserts the native envelope: below 500 always; an error is
// an RFC 9457 problem with its status, a title and a detail.
func checkProblem(t *testing.T, what string, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("%s: %d %s", what, rec.Code, rec.Body)
	}
	if rec.Code < 400 {
		if !json.Valid(rec.Body.Bytes()) {
			t.Errorf("%s: %d with a body that is not JSON: %q", what, rec.Code, rec.Body)
		}
		return
	}
	var p api.Problem
	if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("%s: %d as %q, want a problem: %s", what, rec.Code, ct, rec.Body)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != rec.Code || p.Title == "" || p.Detail == "" {
		t.Errorf("%s: %d problem %s (%v)", what, rec.Code, rec.Body, err)
	}
}

// FuzzNativeSubmit posts arbitrary bodies (and Idempotency-Keys) to
// POST /v1/jobs: 202 or a 4xx problem, never a 5xx; only a 202 queues a
// command; a body the surface decodes re-encodes and decodes to itself.
func FuzzNativeSubmit(f *testing.F) {
	for _, s := range []string{
		// the README's examples
		`{"name":"hello","targets":["127.0.0.1"],"concurrency":2,"agent_wait":30,"steps":[{"script":{"interpreter":"bash","content":"for i in $(seq 1 500); do echo line $i; done; echo $GREETING","args":[],"env":{"GREETING":"hi"}},"timeout":60}]}`,
		`{"targets":["127.0.0.1"],"steps":[{"script":{"content":"sleep 600"}}]}`,
		`{"name":"release 42","targets":["127.0.0.1"],"steps":[{"name":"build","script":{"content":"mkdir -p /tmp/fleetjob-demo/dist && date > /tmp/fleetjob-demo/dist/app-42.txt"}},{"name":"ship","file":{"sources":[{"hosts":["127.0.0.1"],"paths":["/tmp/fleetjob-demo/dist/*.txt"]}],"destination":"/tmp/fleetjob-demo/releases","mode":"0644","download_limit_mb":50}},{"name":"restart","script":{"content":"echo restarting; test -e /tmp/fleetjob-demo/ok"},"timeout":120,"rolling":{"expr":"1 50% 100%","mode":3},"max_fail_percent":25}]}`,
		// edge cases
		`{"targets":["10.0.0.1"],"steps":[{"script":{"content":"rm -rf /"}}]}`,
		`{"targets":["10.0.0.1"],"steps":[{"script":{"content":"x=/; rm -rf $x"}}]}`,
		`{"targets":["10.0.0.1"],"steps":[{"file":{"sources":[{"artifact":"a"}],"destination":"/etc/"}}]}`,
		`{"targets":["10.0.0.1"],"steps":[{"file":{"sources":[{"hosts":["10.0.0.1"],"paths":["REGEX:("]}],"destination":"/opt/x/"}}]}`,
		`{"targets":[{"cloud_id":-1,"ip":"10.0.0.1"}],"steps":[{"script":{"content":"x"}}],"callback_url":"ftp://x"}`,
		`{"targets":["10.0.0.1"],"steps":[{"script":{"content":"x"},"rolling":{"expr":"2 *4611686018427387904"}}]}`,
		`{"targets":["10.0.0.1"],"steps":[{"script":{"content":"x","env":{"1A":"x"},"user":"Root"}}]}`,
		`{"targets":["10.0.0.1"],"steps":[{"type":"deploy"}]}`, `{"steps":[]}`, `{"":1}`, `{}`, ``, `[]`, `nul`, `{"name":"a"} x`,
	} {
		f.Add([]byte(s), "")
	}
	f.Add([]byte(`{"targets":["10.0.0.1"],"steps":[{"script":{"content":"x"}}]}`), "key-1")
	h, rec := fuzzHandler(f)
	f.Fuzz(func(t *testing.T, body []byte, key string) {
		hdr := bearer.Clone()
		if key != "" {
			hdr.Set("Idempotency-Key", key)
		}
		before := rec.Count()
		r := fuzzcore.Do(h, "POST", "/v1/jobs", "application/json", body, hdr)
		checkProblem(t, fmt.Sprintf("POST /v1/jobs %q", body), r)
		if queued := rec.Count() - before; r.Code != http.StatusAccepted && queued != 0 || r.Code == http.StatusAccepted && queued > 1 {
			t.Errorf("%q answered %d after %d commands", body, r.Code, queued)
		}
		var req SubmitRequest
		if api.DecodeStrictBytes(body, &req) != nil {
			if r.Code == http.StatusAccepted {
				t.Errorf("%q accepted, yet it does not decode", body)
			}
			return
		}
		out, _ := json.Marshal(req)
		var back SubmitRequest
		if err := api.DecodeStrictBytes(out, &back); err != nil {
			t.Fatalf("%q decodes, its encoding %s does not: %v", body, out, err)
		}
		if diff := cmp.Diff(back, req, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%q round trip (-back +first):\n%s", body, diff)
		}
	})
}

// FuzzNativeRequest sends arbitrary path parameters and query strings to
// every native route: 2xx or a 4xx problem, never a 5xx.
func FuzzNativeRequest(f *testing.F) {
	routes := []struct{ method, path string }{
		{"GET", "/v1/jobs"}, {"GET", "/v1/jobs/%s"}, {"GET", "/v1/jobs/%s/hosts"}, {"GET", "/v1/jobs/1/hosts/%s/log"},
		{"GET", "/v1/jobs/%s/callback"}, {"POST", "/v1/jobs/%s/stop"}, {"POST", "/v1/jobs/1/steps/%s/retry-failed"},
		{"POST", "/v1/jobs/1/steps/0/%s"}, {"GET", "/v1/agents"}, {"GET", "/v1/deadletters"},
	}
	for i := range routes {
		for _, c := range [][2]string{
			{"1", ""}, {"10.0.0.1", "from=100&limit=50"}, {"0:10.0.0.1", "step=0&attempt=1"}, {"x", "page=0&size=-1"},
			{"99", "status=success&sort=updated_at&order=desc&page=1&size=20"}, {"1", "status=failed&step=99"},
			{"1", "online=true&label=role=web"}, {"confirm", "label=%zz"}, {"-1", "page=99999999999999999999"},
			{"%5B%3A%3A1%5D", "size=1&size=2"}, {"0", "order=sideways&sort=name"}, {"retry-all", "attempt=256"},
		} {
			f.Add(uint8(i), c[0], c[1])
		}
	}
	h, rec := fuzzHandler(f)
	f.Fuzz(func(t *testing.T, route uint8, param, query string) {
		rt := routes[int(route)%len(routes)]
		target := fmt.Sprintf(rt.path, url.PathEscape(param))
		if query != "" {
			target += "?" + query
		}
		before := rec.Count()
		r := fuzzcore.Do(h, rt.method, target, "", nil, bearer)
		if r == nil {
			return // not a request a client can send
		}
		checkProblem(t, rt.method+" "+target, r)
		if r.Code >= 400 && rec.Count() != before {
			t.Errorf("%s %s answered %d after publishing", rt.method, target, r.Code)
		}
	})
}
