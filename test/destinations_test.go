package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// TestProtectedDestinations: a file step into a system directory, or over
// a critical file, is refused with a 400 problem before anything is queued,
// however the path is written; application directories pass. A destination
// that only resolves into /etc on the host (a symlink) passes the API and
// fails on the agent, per host, with the reason.
func TestProtectedDestinations(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"d1=127.0.0.71"}})
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "fleetjob-dest-test.conf"), []byte("x=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fileStep := func(dest string, paths ...string) map[string]any {
		if len(paths) == 0 {
			paths = []string{src + "/fleetjob-dest-test.conf"}
		}
		return map[string]any{"name": "ship", "targets": []string{"127.0.0.71"}, "steps": []any{map[string]any{"file": map[string]any{
			"sources": []any{map[string]any{"hosts": []string{"127.0.0.71"}, "paths": paths}}, "destination": dest}}}}
	}
	before := s.CommandCount(t)
	for _, c := range []struct {
		dest   string
		paths  []string
		detail string
	}{
		{"/etc", nil, "destination /etc is protected"},
		{"/etc/", nil, "destination /etc is protected"},
		{"/usr/bin/", nil, "destination /usr/bin is protected"},
		{"/lib64", nil, "destination /lib64 is protected"},
		{"/root/.ssh", nil, "destination /root/.ssh is protected"},
		{"/etc/passwd", nil, "destination /etc/passwd is protected"},
		{"/etc/ssh/sshd_config/", nil, "protected"},
		{"/", nil, "destination / is protected"},
		{"/etc/../etc/", nil, "clean absolute directory"}, // Normalize refuses unclean paths first
		{"//etc", nil, "clean absolute directory"},
		{"/etc/sudoers.d/../", nil, "clean absolute directory"},
	} {
		var p struct {
			Status int
			Detail string
			Errors []schemas.FieldError
		}
		code, body := s.Do(t, "POST", "/v1/jobs", fileStep(c.dest, c.paths...), nil)
		_ = json.Unmarshal(body, &p)
		text := p.Detail + fmt.Sprint(p.Errors)
		if code != 400 || p.Status != 400 || !strings.Contains(text, c.detail) {
			t.Errorf("destination %q: %d %s, want 400 saying %q", c.dest, code, body, c.detail)
		}
	}
	if after := s.CommandCount(t); after != before {
		t.Errorf("%d commands queued by refused jobs", after-before)
	}

	// allowed: an application's directory, even under /etc (never written:
	// the hosts have no agent)
	for _, dest := range []string{"/etc/fleetjob-test-app/", "/usr/local/fleetjob-test-app"} {
		body := fileStep(dest)
		body["targets"], body["agent_wait"] = []string{"127.0.0.79"}, 1
		body["steps"].([]any)[0].(map[string]any)["file"].(map[string]any)["sources"] = []any{
			map[string]any{"hosts": []string{"127.0.0.79"}, "paths": []string{"/srv/app.conf"}}}
		if code, out := s.Do(t, "POST", "/v1/jobs", body, nil); code != 202 {
			t.Errorf("destination %q: %d %s, want 202", dest, code, out)
		}
	}

	// a symlink into /etc: the API sees an ordinary path, the agent refuses
	link := filepath.Join(t.TempDir(), "conf")
	if err := os.Symlink("/etc", link); err != nil {
		t.Fatal(err)
	}
	id := submit(t, s, fileStep(link+"/"), nil)
	if sum := waitJob(t, s, id, 30*time.Second); sum.Status != schemas.JobFailed {
		t.Fatalf("job through a symlink to /etc: %s, want failed", sum.Status)
	}
	var hosts struct{ Items []schemas.HostRow }
	if code := s.JSON(t, "GET", fmt.Sprintf("/v1/jobs/%d/hosts?step=0", id), nil, nil, &hosts); code != 200 {
		t.Fatalf("hosts: %d", code)
	}
	refused := false
	for _, h := range hosts.Items {
		if h.Status == schemas.HostFailed && strings.Contains(h.Error, "resolves to /etc") && strings.Contains(h.Error, "protected") {
			refused = true
		}
	}
	if !refused {
		t.Errorf("hosts %+v: want the download failed as protected", hosts.Items)
	}
}
