package test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/testenv"
)

// requestIDs are the per-request ids of the surfaces' answers, which
// differ between two otherwise equal answers.
var requestIDs = regexp.MustCompile(`"(request_id|job_request_id|instance|correlation_id)":"[^"]*"`)

// sameRefusal fails unless two answers are the same refusal: status,
// content type and body but for request ids.
func sameRefusal(t *testing.T, what string, got, want answer) {
	t.Helper()
	norm := func(a answer) string { return requestIDs.ReplaceAllString(string(a.body), `"$1":"…"`) }
	if got.code != want.code || got.hdr.Get("Content-Type") != want.hdr.Get("Content-Type") || norm(got) != norm(want) {
		t.Errorf("%s: expired answers %s (%s), revoked %s (%s)", what, got, got.hdr.Get("Content-Type"), want, want.hdr.Get("Content-Type"))
	}
}

// TestExpiredCredentialsRefusedLikeRevoked: a token or BlueKing app whose
// ttl has passed is refused on every surface exactly as a revoked one is,
// each in its own envelope; the list shows when each expires; a bad ttl
// or expiry is a 400 problem naming the field.
func TestExpiredCredentialsRefusedLikeRevoked(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{})
	admin := bearer(s.Token)
	create := func(path string, body map[string]any) map[string]any {
		t.Helper()
		a := call(t, s.APIURL, "POST", path, body, admin)
		if a.code != http.StatusCreated {
			t.Fatalf("create %s: %s", path, a)
		}
		return a.json(t)
	}
	short := create("/v1/tokens", map[string]any{"user": "tim", "role": "viewer", "scopes": []string{"biz:2"}, "ttl": "1s"})
	if _, err := time.Parse(time.RFC3339, short["expires_at"].(string)); err != nil {
		t.Errorf("a token made with a ttl answers expires_at %v", short["expires_at"])
	}
	revoked, rid := newToken(t, s, "rob", "viewer", "biz:2")
	if a := call(t, s.APIURL, "DELETE", "/v1/tokens/"+rid, nil, admin); a.code != 200 {
		t.Fatalf("revoke: %s", a)
	}
	shortApp := create("/v1/bk-apps", map[string]any{"bk_app_code": "brief", "scopes": []string{"biz:2"}, "ttl": "1s"})
	revokedApp := newApp(t, s, "gone", false, "biz:2")
	if a := call(t, s.APIURL, "DELETE", "/v1/bk-apps/gone", nil, admin); a.code != 200 {
		t.Fatalf("revoke app: %s", a)
	}

	token := short["token"].(string)
	testenv.Eventually(t, 10*time.Second, func() bool { return call(t, s.APIURL, "GET", "/v1/jobs", nil, bearer(token)).code == 401 },
		"the 1s token to expire")
	got, want := call(t, s.APIURL, "GET", "/v1/jobs", nil, bearer(token)), call(t, s.APIURL, "GET", "/v1/jobs", nil, bearer(revoked))
	sameRefusal(t, "native", got, want)
	if !strings.HasPrefix(got.hdr.Get("Content-Type"), "application/problem+json") {
		t.Errorf("native refusal is not an RFC 9457 problem: %s %s", got.hdr.Get("Content-Type"), got)
	}
	sameRefusal(t, "octans", call(t, s.APIURL, "POST", "/api/check", map[string]any{"id": 1}, bearer(token)),
		call(t, s.APIURL, "POST", "/api/check", map[string]any{"id": 1}, bearer(revoked)))
	script := bkScript("2", "10.0.0.1", "true")
	appSecret := shortApp["bk_app_secret"].(string)
	testenv.Eventually(t, 10*time.Second, func() bool {
		return call(t, s.APIURL, "POST", "/api/v3/fast_execute_script", script, bkAuth("brief", appSecret, "")).code == 401
	}, "the 1s app to expire")
	sameRefusal(t, "bkjob", call(t, s.APIURL, "POST", "/api/v3/fast_execute_script", script, bkAuth("brief", appSecret, "")),
		call(t, s.APIURL, "POST", "/api/v3/fast_execute_script", script, bkAuth("gone", revokedApp, "")))

	list := call(t, s.APIURL, "GET", "/v1/tokens", nil, admin)
	if list.code != 200 || !strings.Contains(string(list.body), `"expires_at":"`+short["expires_at"].(string)+`"`) {
		t.Errorf("the token list does not show the expiry %v: %s", short["expires_at"], list)
	}

	for _, tc := range []struct {
		name, field string
		body        map[string]any
	}{
		{"ttl not a duration", "ttl", map[string]any{"ttl": "a month"}},
		{"ttl negative", "ttl", map[string]any{"ttl": "-5m"}},
		{"expires_at past", "expires_at", map[string]any{"expires_at": time.Now().Add(-time.Hour).Format(time.RFC3339)}},
		{"expires_at not a time", "expires_at", map[string]any{"expires_at": "tomorrow"}},
		{"both", "ttl", map[string]any{"ttl": "1h", "expires_at": time.Now().Add(2 * time.Hour).Format(time.RFC3339)}},
	} {
		tc.body["user"], tc.body["role"], tc.body["scopes"] = "bad", "viewer", []string{"biz:2"}
		a := call(t, s.APIURL, "POST", "/v1/tokens", tc.body, admin)
		if a.code != 400 || !strings.HasPrefix(a.hdr.Get("Content-Type"), "application/problem+json") || !strings.Contains(string(a.body), `"field":"`+tc.field+`"`) {
			t.Errorf("%s: %s, want a 400 problem naming %s", tc.name, a, tc.field)
		}
	}
}
