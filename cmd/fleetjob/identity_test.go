package main

import (
	"bytes"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/testenv"
)

// runCLI runs fleetjob with args against the system's API and returns
// what it printed.
func runIdentityCLI(t *testing.T, s *testenv.System, args ...string) (string, error) {
	t.Helper()
	root := newRoot([]string{"FLEETJOB_API=" + s.APIURL, "FLEETJOB_TOKEN=" + s.Token})
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

func statusWith(t *testing.T, s *testenv.System, token string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", s.APIURL+"/v1/jobs", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestTokenCLI: fleetjob token create shows a working token once, list
// shows no secret, and revoke makes the token fail at once.
func TestTokenCLI(t *testing.T) {
	s := testenv.Start(t, testenv.Options{})
	out, err := runIdentityCLI(t, s, "token", "create", "--user", "carol", "--role", "viewer", "--scope", "biz:2", "--scope", "biz:5")
	if err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	tm, im := regexp.MustCompile(`(?m)^(fjt_\S+)$`).FindStringSubmatch(out), regexp.MustCompile(`(?m)^id\s+(\S+)`).FindStringSubmatch(out)
	if tm == nil || im == nil {
		t.Fatalf("create printed no token and id:\n%s", out)
	}
	token, id := tm[1], im[1]
	if got := statusWith(t, s, token); got != 200 {
		t.Errorf("the new token: HTTP %d", got)
	}
	out, err = runIdentityCLI(t, s, "token", "list")
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "biz:2,biz:5") || strings.Contains(out, token) {
		t.Errorf("list: %v\n%s", err, out)
	}
	if out, err = runIdentityCLI(t, s, "token", "revoke", id); err != nil {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	if got := statusWith(t, s, token); got != 401 {
		t.Errorf("the revoked token: HTTP %d", got)
	}
	if _, err := runIdentityCLI(t, s, "token", "create", "--user", "dave", "--role", "boss", "--scope", "biz:2"); err == nil || !strings.Contains(err.Error(), "role") {
		t.Errorf("a bad role: %v", err)
	}
	out, err = runIdentityCLI(t, s, "bk-app", "create", "--code", "ops-portal", "--scope", "biz:2", "--trusted-user-assertion")
	if err != nil || !regexp.MustCompile(`bk_app_secret\s+fjt_\S+`).MatchString(out) {
		t.Errorf("bk-app create: %v\n%s", err, out)
	}
	out, err = runIdentityCLI(t, s, "bk-app", "list")
	if err != nil || !strings.Contains(out, "ops-portal (asserts users)") {
		t.Errorf("bk-app list: %v\n%s", err, out)
	}
}

// TestTokenCLIExpiry: --ttl makes a token that list shows expiring, and
// that fails once that time has come; a bad ttl is refused with its field.
func TestTokenCLIExpiry(t *testing.T) {
	s := testenv.Start(t, testenv.Options{})
	out, err := runIdentityCLI(t, s, "token", "create", "--user", "erin", "--role", "viewer", "--scope", "biz:2", "--ttl", "720h")
	if err != nil || !regexp.MustCompile(`(?m)^expires 20\d\d-`).MatchString(out) {
		t.Fatalf("create --ttl 720h: %v\n%s", err, out)
	}
	id := regexp.MustCompile(`(?m)^id\s+(\S+)`).FindStringSubmatch(out)[1]
	out, err = runIdentityCLI(t, s, "token", "list")
	line := regexp.MustCompile(`(?m)^` + id + `.*$`).FindString(out)
	if err != nil || !strings.Contains(out, "EXPIRES") || !strings.Contains(line, time.Now().Add(720*time.Hour).UTC().Format("2006-01-02")) {
		t.Errorf("list does not show the expiry: %v\n%s", err, out)
	}
	out, err = runIdentityCLI(t, s, "token", "create", "--user", "erin", "--role", "viewer", "--scope", "biz:2", "--ttl", "1s")
	if err != nil {
		t.Fatalf("create --ttl 1s: %v\n%s", err, out)
	}
	token := regexp.MustCompile(`(?m)^(fjt_\S+)$`).FindStringSubmatch(out)[1]
	short := regexp.MustCompile(`(?m)^id\s+(\S+)`).FindStringSubmatch(out)[1]
	testenv.Eventually(t, 10*time.Second, func() bool { return statusWith(t, s, token) == 401 }, "the 1s token to expire")
	out, err = runIdentityCLI(t, s, "token", "list")
	if line := regexp.MustCompile(`(?m)^` + short + `.*$`).FindString(out); err != nil || !strings.Contains(line, "(expired)") {
		t.Errorf("list does not show the token expired: %v\n%s", err, out)
	}
	if _, err := runIdentityCLI(t, s, "token", "create", "--user", "erin", "--role", "viewer", "--scope", "biz:2", "--ttl", "a month"); err == nil ||
		!strings.Contains(err.Error(), "HTTP 400") || !strings.Contains(err.Error(), "ttl: ") {
		t.Errorf("a bad ttl: %v", err)
	}
	out, err = runIdentityCLI(t, s, "bk-app", "create", "--code", "short-lived", "--scope", "biz:2", "--ttl", "24h")
	if err != nil || !regexp.MustCompile(`(?m)^expires\s+20\d\d-`).MatchString(out) {
		t.Errorf("bk-app create --ttl: %v\n%s", err, out)
	}
}
