// Package test holds fleetjob's integration and end-to-end tests: real
// embedded JetStream, a real redis-server, agents running real bash, and
// worker and agent processes of the real binary.
package test

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

func script(content string, targets ...string) map[string]any {
	return map[string]any{
		"name":    "t",
		"targets": targets,
		"steps":   []any{map[string]any{"script": map[string]any{"content": content}}},
	}
}

func submit(t *testing.T, s *testenv.System, body any, headers map[string]string) int64 {
	t.Helper()
	var out api.SubmitResponse
	code := s.JSON(t, "POST", "/v1/jobs", body, headers, &out)
	if code != 202 || out.ID <= 0 {
		t.Fatalf("submit: got %d %+v, want 202 with an id", code, out)
	}
	return out.ID
}

func job(t *testing.T, s *testenv.System, id int64) schemas.JobSummary {
	t.Helper()
	var sum schemas.JobSummary
	if code := s.JSON(t, "GET", fmt.Sprintf("/v1/jobs/%d", id), nil, nil, &sum); code != 200 {
		t.Fatalf("get job %d: %d", id, code)
	}
	return sum
}

func waitJob(t *testing.T, s *testenv.System, id int64, timeout time.Duration) schemas.JobSummary {
	t.Helper()
	var sum schemas.JobSummary
	testenv.Eventually(t, timeout, func() bool {
		sum = job(t, s, id)
		return schemas.JobFinal(sum.Status)
	}, "job %d to finish", id)
	return sum
}

func waitStatus(t *testing.T, s *testenv.System, id int64, host string, want schemas.HostStatus, timeout time.Duration) {
	t.Helper()
	testenv.Eventually(t, timeout, func() bool {
		for _, h := range hosts(t, s, id) {
			if h.Host.IP == host && h.Status == want {
				return true
			}
		}
		return false
	}, "host %s of job %d to be %s", host, id, want)
}

func hosts(t *testing.T, s *testenv.System, id int64) []api.HostView {
	t.Helper()
	var out api.ListResponse[api.HostView]
	if code := s.JSON(t, "GET", fmt.Sprintf("/v1/jobs/%d/hosts", id), nil, nil, &out); code != 200 {
		t.Fatalf("hosts of job %d: %d", id, code)
	}
	return out.Items
}

func hostByIP(t *testing.T, s *testenv.System, id int64, ip string) api.HostView {
	t.Helper()
	for _, h := range hosts(t, s, id) {
		if h.Host.IP == ip {
			return h
		}
	}
	t.Fatalf("job %d has no host %s", id, ip)
	return api.HostView{}
}

func readLog(t *testing.T, s *testenv.System, id int64, host string, from, limit int) api.LogResponse {
	t.Helper()
	var out api.LogResponse
	path := fmt.Sprintf("/v1/jobs/%d/hosts/%s/log?from=%d&limit=%d", id, url.PathEscape(host), from, limit)
	if code := s.JSON(t, "GET", path, nil, nil, &out); code != 200 {
		t.Fatalf("log of %s in job %d: %d", host, id, code)
	}
	return out
}

// ledger is a file scripts append to, so a test can count what really ran.
type ledger string

func newLedger(t *testing.T) ledger { return ledger(filepath.Join(t.TempDir(), "ledger")) }

// append is the shell that records a line.
func (l ledger) append(what string) string { return fmt.Sprintf("echo %s >> %s", what, string(l)) }

func (l ledger) lines(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(string(l))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

func count(lines []string) map[string]int {
	m := map[string]int{}
	for _, l := range lines {
		m[l]++
	}
	return m
}

func writeFile(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
}
