package test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/internal/roles"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// The tests below exercise the HTTP identities over every surface, against
// the real API, NATS, Redis and agents running bash: no credentials are
// refused, roles bound what a caller may do, scopes bound what it sees and
// targets, revocation holds at once, BlueKing apps assert users only when
// trusted, and rate limits answer 429.

// answer is one HTTP answer.
type answer struct {
	code int
	hdr  http.Header
	body []byte
}

func (a answer) String() string { return fmt.Sprintf("HTTP %d %s", a.code, a.body) }

// json decodes the body into a map.
func (a answer) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatalf("not JSON: %s", a)
	}
	return m
}

// call sends a request to an API at base with exactly the given headers.
func call(t *testing.T, base, method, path string, body any, headers map[string]string) answer {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, hdr: resp.Header, body: b}
}

func bearer(token string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + token}
}

// startAPI runs another API process of the system with cfg (the admin
// token is the system's) and returns its base URL.
func startAPI(t *testing.T, s *testenv.System, cfg roles.APIConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Token = s.Token
	p := s.P
	p.Reg = prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	done := testenv.Go(func() error { return roles.RunAPI(ctx, p, ln, cfg) })
	t.Cleanup(func() { cancel(); testenv.Returned(t, done, 15*time.Second, "second api") })
	base := "http://" + ln.Addr().String()
	testenv.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	}, "second api up")
	return base
}

// newToken creates a token as the admin and returns its secret and id.
func newToken(t *testing.T, s *testenv.System, user, role string, scopes ...string) (token, id string) {
	t.Helper()
	a := call(t, s.APIURL, "POST", "/v1/tokens", map[string]any{"user": user, "role": role, "scopes": scopes}, bearer(s.Token))
	if a.code != http.StatusCreated {
		t.Fatalf("create token: %s", a)
	}
	m := a.json(t)
	return m["token"].(string), m["id"].(string)
}

// newApp creates a BlueKing app as the admin and returns its secret.
func newApp(t *testing.T, s *testenv.System, code string, trusted bool, scopes ...string) string {
	t.Helper()
	a := call(t, s.APIURL, "POST", "/v1/bk-apps", map[string]any{"bk_app_code": code, "role": "operator", "scopes": scopes,
		"trusted_user_assertion": trusted}, bearer(s.Token))
	if a.code != http.StatusCreated {
		t.Fatalf("create app: %s", a)
	}
	return a.json(t)["bk_app_secret"].(string)
}

func bkAuth(code, secret, user string) map[string]string {
	return map[string]string{"X-Bkapi-Authorization": fmt.Sprintf(`{"bk_app_code": %q, "bk_app_secret": %q, "bk_username": %q}`, code, secret, user)}
}

func bkScript(biz, ip, content string) map[string]any {
	return map[string]any{"bk_scope_type": "biz", "bk_scope_id": biz, "script_language": 1, "account_alias": "root",
		"script_content": b64(content), "target_server": map[string]any{"ip_list": []map[string]any{{"bk_cloud_id": 0, "ip": ip}}}}
}

func nativeScript(content, scope string, targets ...string) map[string]any {
	m := script(content, targets...)
	if scope != "" {
		m["scope"] = scope
	}
	return m
}

func jobID(t *testing.T, a answer) int64 {
	t.Helper()
	if a.code != http.StatusAccepted {
		t.Fatalf("submit: %s", a)
	}
	return int64(a.json(t)["id"].(float64))
}

// TestHTTPNoCredentialsRefused: every surface refuses a request without
// credentials, or with wrong ones, in its own envelope, and queues nothing.
func TestHTTPNoCredentialsRefused(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{})
	before := s.CommandCount(t)
	run := script("true", "10.0.0.1")
	for _, h := range []map[string]string{nil, bearer("nope"), bearer("")} {
		a := call(t, s.APIURL, "POST", "/v1/jobs", run, h)
		if a.code != 401 || a.hdr.Get("Content-Type") != "application/problem+json" || !strings.HasPrefix(a.hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("native %v: %s %v", h, a, a.hdr)
		}
		a = call(t, s.APIURL, "POST", "/api/run", map[string]any{"nodes": []string{"10.0.0.1"}, "name": "x", "tasks": "true"}, h)
		if a.code != 401 || a.json(t)["code"] != -1.0 {
			t.Errorf("octans %v: %s", h, a)
		}
		a = call(t, s.APIURL, "POST", "/api/check", map[string]any{"id": 1}, h)
		if a.code != 401 {
			t.Errorf("octans check %v: %s", h, a)
		}
	}
	for _, h := range []map[string]string{nil, bkAuth("ci", "wrong", ""), bkAuth("ci", "", "")} {
		a := call(t, s.APIURL, "POST", "/api/v3/fast_execute_script", bkScript("2", "10.0.0.1", "true"), h)
		if a.code != 401 || a.json(t)["code"] != 1240005.0 {
			t.Errorf("bkjob %v: %s", h, a)
		}
	}
	// an app code the admin never created, with a made-up secret
	a := call(t, s.APIURL, "POST", "/api/c/compapi/v2/jobv3/fast_execute_script/",
		map[string]any{"bk_app_code": "ghost", "bk_app_secret": "fjt_x", "bk_scope_type": "biz", "bk_scope_id": "2"}, nil)
	if a.code != 401 {
		t.Errorf("esb with an unknown app: %s", a)
	}
	if got := s.CommandCount(t); got != before {
		t.Errorf("%d commands queued by unauthenticated requests", got-before)
	}
}

// TestOctansAllowedNetwork: octans clients without a token are admitted
// only from a listed network, as an operator of the grant's scopes.
func TestOctansAllowedNetwork(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1})
	s.StartAgentScoped(t, "n2", "10.0.2.1", "biz:2")
	s.StartAgentScoped(t, "n3", "10.0.3.1", "biz:3")
	open := startAPI(t, s, roles.APIConfig{OctansAllow: []api.NetworkGrant{mustGrant(t, "127.0.0.0/8=biz:2")}})
	closed := startAPI(t, s, roles.APIConfig{OctansAllow: []api.NetworkGrant{mustGrant(t, "10.9.0.0/16=biz:2")}})

	run := map[string]any{"nodes": []string{"10.0.2.1"}, "name": "from-net", "tasks": "echo hi"}
	if a := call(t, closed, "POST", "/api/run", run, nil); a.code != 401 {
		t.Errorf("from a network not listed: %s", a)
	}
	a := call(t, open, "POST", "/api/run", run, nil)
	if a.code != 200 || a.json(t)["code"] != 0.0 {
		t.Fatalf("from a listed network: %s", a)
	}
	var content struct{ ID int64 }
	b, _ := json.Marshal(a.json(t)["content"])
	_ = json.Unmarshal(b, &content)
	sum := waitJob(t, s, content.ID, 20*time.Second)
	if sum.Status != schemas.JobSuccess || sum.Owner != "network:127.0.0.0/8" {
		t.Errorf("job from a listed network: status %s owner %q", sum.Status, sum.Owner)
	}
	// the grant is for biz:2: a host of biz:3 is refused before anything is queued
	before := s.CommandCount(t)
	a = call(t, open, "POST", "/api/run", map[string]any{"nodes": []string{"10.0.3.1"}, "name": "other-biz", "tasks": "echo hi"}, nil)
	if a.code != 200 || a.json(t)["code"] != -1.0 || !strings.Contains(string(a.body), "not in scope biz:2") {
		t.Errorf("a host of another scope: %s", a)
	}
	if s.CommandCount(t) != before {
		t.Error("a job on a host of another scope was queued")
	}
	// a wrong token is refused even from a listed network
	if a := call(t, open, "POST", "/api/run", run, bearer("nope")); a.code != 401 {
		t.Errorf("wrong token from a listed network: %s", a)
	}
}

func mustGrant(t *testing.T, s string) api.NetworkGrant {
	t.Helper()
	g, err := api.ParseNetworkGrant(s)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestViewerCannotRunOrStop: a viewer reads the jobs of its scope and may
// not run, stop or operate, on any surface.
func TestViewerCannotRunOrStop(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1})
	s.StartAgentScoped(t, "v2", "10.0.2.1", "biz:2")
	viewer, _ := newToken(t, s, "vera", "viewer", "biz:2")
	id := jobID(t, call(t, s.APIURL, "POST", "/v1/jobs", nativeScript("sleep 30", "biz:2", "10.0.2.1"), bearer(s.Token)))
	before := s.CommandCount(t)

	if a := call(t, s.APIURL, "GET", "/v1/jobs/"+strconv.FormatInt(id, 10), nil, bearer(viewer)); a.code != 200 {
		t.Errorf("viewer reads a job of its scope: %s", a)
	}
	if a := call(t, s.APIURL, "POST", "/v1/jobs", nativeScript("true", "", "10.0.2.1"), bearer(viewer)); a.code != 403 ||
		a.hdr.Get("Content-Type") != "application/problem+json" {
		t.Errorf("viewer runs: %s", a)
	}
	if a := call(t, s.APIURL, "POST", fmt.Sprintf("/v1/jobs/%d/stop", id), nil, bearer(viewer)); a.code != 403 {
		t.Errorf("viewer stops: %s", a)
	}
	if a := call(t, s.APIURL, "POST", fmt.Sprintf("/v1/jobs/%d/steps/0/skip", id), nil, bearer(viewer)); a.code != 403 {
		t.Errorf("viewer operates: %s", a)
	}
	if a := call(t, s.APIURL, "POST", "/api/run", map[string]any{"nodes": []string{"10.0.2.1"}, "name": "v", "tasks": "true"}, bearer(viewer)); a.code != 403 || a.json(t)["code"] != -1.0 {
		t.Errorf("viewer runs through octans: %s", a)
	}
	if a := call(t, s.APIURL, "POST", "/api/stop", map[string]any{"id": id}, bearer(viewer)); a.code != 403 {
		t.Errorf("viewer stops through octans: %s", a)
	}
	if a := call(t, s.APIURL, "POST", "/v1/tokens", map[string]any{"user": "x", "role": "admin"}, bearer(viewer)); a.code != 403 {
		t.Errorf("viewer makes a token: %s", a)
	}
	if a := call(t, s.APIURL, "GET", "/v1/deadletters", nil, bearer(viewer)); a.code != 403 {
		t.Errorf("viewer reads dead letters: %s", a)
	}
	// a viewer app on the BlueKing surface: BK's permission error, HTTP 200
	a := call(t, s.APIURL, "POST", "/v1/bk-apps", map[string]any{"bk_app_code": "peek", "role": "viewer", "scopes": []string{"biz:2"}}, bearer(s.Token))
	if a.code != 201 {
		t.Fatalf("create viewer app: %s", a)
	}
	secret := a.json(t)["bk_app_secret"].(string)
	a = call(t, s.APIURL, "POST", "/api/v3/fast_execute_script", bkScript("2", "10.0.2.1", "true"), bkAuth("peek", secret, ""))
	if a.code != 200 || a.json(t)["code"] != 9900403.0 {
		t.Errorf("viewer app runs: %s", a)
	}
	a = call(t, s.APIURL, "POST", "/api/v3/operate_job_instance", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "2",
		"job_instance_id": id, "operation_code": 1}, bkAuth("peek", secret, ""))
	if a.code != 200 || a.json(t)["code"] != 9900403.0 {
		t.Errorf("viewer app stops: %s", a)
	}
	if got := s.CommandCount(t); got != before {
		t.Errorf("a viewer queued %d commands", got-before)
	}
	call(t, s.APIURL, "POST", fmt.Sprintf("/v1/jobs/%d/stop", id), nil, bearer(s.Token))
}

// TestScopesIsolateCallers: a caller of scope A neither sees, stops nor
// targets what belongs to scope B, and B's jobs are not found (not
// forbidden) for it, on every surface.
func TestScopesIsolateCallers(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1})
	s.StartAgentScoped(t, "s2", "10.0.2.1", "biz:2")
	s.StartAgentScoped(t, "s3", "10.0.3.1", "biz:3")
	alice, _ := newToken(t, s, "alice", "operator", "biz:2")
	bob, _ := newToken(t, s, "bob", "operator", "biz:3")
	multi, _ := newToken(t, s, "mo", "operator", "biz:2", "biz:3")

	mine := jobID(t, call(t, s.APIURL, "POST", "/v1/jobs", nativeScript("echo alice", "", "10.0.2.1"), bearer(alice)))
	theirs := jobID(t, call(t, s.APIURL, "POST", "/v1/jobs", nativeScript("echo secret-of-bob; sleep 30", "", "10.0.3.1"), bearer(bob)))
	if sum := waitJob(t, s, mine, 20*time.Second); sum.Status != schemas.JobSuccess || sum.Owner != "alice" {
		t.Errorf("alice's job: %s owner %q", sum.Status, sum.Owner)
	}
	spec := loadSpec(t, s, theirs)
	if spec.Scope == nil || spec.Scope.String() != "biz:3" || spec.Owner != "bob" {
		t.Errorf("bob's job: scope %v owner %q", spec.Scope, spec.Owner)
	}
	waitStatus(t, s, theirs, "10.0.3.1", schemas.HostRunning, 20*time.Second)

	before := s.CommandCount(t)
	other := strconv.FormatInt(theirs, 10)
	for _, p := range []string{"/v1/jobs/" + other, "/v1/jobs/" + other + "/hosts", "/v1/jobs/" + other + "/hosts/10.0.3.1/log",
		"/v1/jobs/" + other + "/callback"} {
		if a := call(t, s.APIURL, "GET", p, nil, bearer(alice)); a.code != 404 {
			t.Errorf("alice reads %s: %s", p, a)
		}
	}
	for _, p := range []string{"/v1/jobs/" + other + "/stop", "/v1/jobs/" + other + "/steps/0/skip"} {
		if a := call(t, s.APIURL, "POST", p, nil, bearer(alice)); a.code != 404 {
			t.Errorf("alice writes %s: %s", p, a)
		}
	}
	a := call(t, s.APIURL, "GET", "/v1/jobs?size=1000", nil, bearer(alice))
	if a.code != 200 || strings.Contains(string(a.body), fmt.Sprintf(`"id":%d,`, theirs)) || !strings.Contains(string(a.body), fmt.Sprintf(`"id":%d,`, mine)) {
		t.Errorf("alice lists jobs: %s", a)
	}
	a = call(t, s.APIURL, "GET", "/v1/agents", nil, bearer(alice))
	if a.code != 200 || strings.Contains(string(a.body), `"s3"`) || !strings.Contains(string(a.body), `"s2"`) {
		t.Errorf("alice lists agents: %s", a)
	}
	// targeting bob's host, implicitly or naming bob's scope
	if a := call(t, s.APIURL, "POST", "/v1/jobs", nativeScript("id", "", "10.0.3.1"), bearer(alice)); a.code != 400 || !strings.Contains(string(a.body), "not in scope biz:2") {
		t.Errorf("alice targets bob's host: %s", a)
	}
	if a := call(t, s.APIURL, "POST", "/v1/jobs", nativeScript("id", "biz:3", "10.0.3.1"), bearer(alice)); a.code != 403 {
		t.Errorf("alice names bob's scope: %s", a)
	}
	// a host nobody enrolled in a scope
	if a := call(t, s.APIURL, "POST", "/v1/jobs", nativeScript("id", "", "10.0.9.9"), bearer(alice)); a.code != 400 {
		t.Errorf("alice targets an unknown host: %s", a)
	}
	// several scopes: name one
	if a := call(t, s.APIURL, "POST", "/v1/jobs", nativeScript("id", "", "10.0.2.1"), bearer(multi)); a.code != 400 || !strings.Contains(string(a.body), "name one") {
		t.Errorf("several scopes, none named: %s", a)
	}
	// octans: not found, in its own words
	for _, p := range []string{"/api/check", "/api/stop"} {
		a := call(t, s.APIURL, "POST", p, map[string]any{"id": theirs}, bearer(alice))
		if a.code != 200 || a.json(t)["message"] != "task not found..." {
			t.Errorf("alice %s through octans: %s", p, a)
		}
	}
	if a := call(t, s.APIURL, "POST", "/api/getlog", map[string]any{"host": "10.0.3.1"}, bearer(alice)); strings.Contains(string(a.body), "10.0.3.1, result") {
		t.Errorf("alice reads bob's host history through octans: %s", a)
	}
	// BlueKing: an app of biz:2 asking for bob's job in biz:3, or in biz:2
	secret := newApp(t, s, "alice-app", false, "biz:2")
	for _, biz := range []string{"2", "3"} {
		a := call(t, s.APIURL, "POST", "/api/v3/get_job_instance_status", map[string]any{"bk_scope_type": "biz", "bk_scope_id": biz,
			"job_instance_id": theirs}, bkAuth("alice-app", secret, ""))
		if a.code != 200 || a.json(t)["code"] != 1244006.0 {
			t.Errorf("app of biz:2 reads bob's job as biz:%s: %s", biz, a)
		}
		a = call(t, s.APIURL, "POST", "/api/v3/operate_job_instance", map[string]any{"bk_scope_type": "biz", "bk_scope_id": biz,
			"job_instance_id": theirs, "operation_code": 1}, bkAuth("alice-app", secret, ""))
		if a.code != 200 || a.json(t)["code"] != 1244006.0 {
			t.Errorf("app of biz:2 stops bob's job as biz:%s: %s", biz, a)
		}
	}
	a = call(t, s.APIURL, "POST", "/api/v3/fast_execute_script", bkScript("3", "10.0.3.1", "id"), bkAuth("alice-app", secret, ""))
	if a.code != 200 || a.json(t)["code"] != 9900403.0 {
		t.Errorf("app of biz:2 runs in biz:3: %s", a)
	}
	a = call(t, s.APIURL, "POST", "/api/v3/fast_execute_script", bkScript("2", "10.0.3.1", "id"), bkAuth("alice-app", secret, ""))
	if a.code != 200 || a.json(t)["result"] != false {
		t.Errorf("app of biz:2 targets bob's host: %s", a)
	}
	if got := s.CommandCount(t); got != before {
		t.Errorf("%d commands queued across scopes", got-before)
	}
	if sum := job(t, s, theirs); sum.Status != schemas.JobRunning {
		t.Errorf("bob's job is %s after alice's attempts", sum.Status)
	}
	if a := call(t, s.APIURL, "POST", "/v1/jobs/"+other+"/stop", nil, bearer(bob)); a.code != 202 {
		t.Errorf("bob stops his job: %s", a)
	}
	// one caller's Idempotency-Key never answers another caller's job
	ka, kb := bearer(alice), bearer(bob)
	ka["Idempotency-Key"], kb["Idempotency-Key"] = "deploy-1", "deploy-1"
	first := jobID(t, call(t, s.APIURL, "POST", "/v1/jobs", nativeScript("true", "", "10.0.2.1"), ka))
	if second := jobID(t, call(t, s.APIURL, "POST", "/v1/jobs", nativeScript("true", "", "10.0.3.1"), kb)); second == first {
		t.Errorf("bob's submission with alice's key answered alice's job %d", first)
	}
}

func loadSpec(t *testing.T, s *testenv.System, id int64) schemas.JobSpec { return s.Spec(t, id) }

// TestRevokedTokenFailsAtOnce: a revoked token fails on its next request,
// on every API process.
func TestRevokedTokenFailsAtOnce(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{})
	second := startAPI(t, s, roles.APIConfig{})
	token, id := newToken(t, s, "rita", "viewer", "biz:2")
	for _, base := range []string{s.APIURL, second} {
		if a := call(t, base, "GET", "/v1/jobs", nil, bearer(token)); a.code != 200 {
			t.Fatalf("before revocation: %s", a)
		}
	}
	a := call(t, s.APIURL, "GET", "/v1/tokens", nil, bearer(s.Token))
	if a.code != 200 || !strings.Contains(string(a.body), id) || strings.Contains(string(a.body), token) || strings.Contains(string(a.body), "secret_hash") {
		t.Errorf("token list: %s", a)
	}
	if a := call(t, second, "DELETE", "/v1/tokens/"+id, nil, bearer(s.Token)); a.code != 200 {
		t.Fatalf("revoke: %s", a)
	}
	for _, base := range []string{s.APIURL, second} {
		if a := call(t, base, "GET", "/v1/jobs", nil, bearer(token)); a.code != 401 {
			t.Errorf("after revocation: %s", a)
		}
		if a := call(t, base, "POST", "/api/check", map[string]any{"id": 1}, bearer(token)); a.code != 401 {
			t.Errorf("after revocation, octans: %s", a)
		}
	}
	if a := call(t, s.APIURL, "DELETE", "/v1/tokens/0123456789abcdef", nil, bearer(s.Token)); a.code != 404 {
		t.Errorf("revoke an unknown token: %s", a)
	}
}

// TestBKAppUserAssertion: an app acts as itself; only an app an admin
// marked trusted may act as the bk_username it names.
func TestBKAppUserAssertion(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1})
	s.StartAgentScoped(t, "b2", "10.0.2.1", "biz:2")
	plain := newApp(t, s, "plain", false, "biz:2")
	gw := newApp(t, s, "gateway", true, "biz:2")
	before := s.CommandCount(t)
	a := call(t, s.APIURL, "POST", "/api/v3/fast_execute_script", bkScript("2", "10.0.2.1", "id"), bkAuth("plain", plain, "alice"))
	if a.code != 200 || a.json(t)["code"] != 9900403.0 || a.json(t)["result"] != false {
		t.Errorf("untrusted app asserts a user: %s", a)
	}
	if a := call(t, s.APIURL, "POST", "/api/v3/fast_execute_script", bkScript("2", "10.0.2.1", "id"), bkAuth("plain", gw, "")); a.code != 401 {
		t.Errorf("one app's secret under another's code: %s", a)
	}
	if s.CommandCount(t) != before {
		t.Error("a refused app queued a job")
	}
	owner := func(a answer) string {
		t.Helper()
		if a.code != 200 || a.json(t)["result"] != true {
			t.Fatalf("submit: %s", a)
		}
		data := a.json(t)["data"].(map[string]any)
		return loadSpec(t, s, int64(data["job_instance_id"].(float64))).Owner
	}
	if got := owner(call(t, s.APIURL, "POST", "/api/v3/fast_execute_script", bkScript("2", "10.0.2.1", "id"), bkAuth("plain", plain, ""))); got != "plain" {
		t.Errorf("untrusted app's job owner %q, want the app", got)
	}
	if got := owner(call(t, s.APIURL, "POST", "/api/v3/fast_execute_script", bkScript("2", "10.0.2.1", "id"), bkAuth("gateway", gw, "alice"))); got != "alice" {
		t.Errorf("trusted app's job owner %q, want the asserted user", got)
	}
}

// TestRateLimitPerCredential: a credential over its rate gets 429 with
// Retry-After in each surface's envelope; the admin token is exempt.
func TestRateLimitPerCredential(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{})
	limited := startAPI(t, s, roles.APIConfig{Rate: 0.01, Burst: 2})
	token, _ := newToken(t, s, "rate", "viewer", "biz:2")
	for i := range 2 {
		if a := call(t, limited, "GET", "/v1/jobs", nil, bearer(token)); a.code != 200 {
			t.Fatalf("request %d within the burst: %s", i, a)
		}
	}
	a := call(t, limited, "GET", "/v1/jobs", nil, bearer(token))
	if a.code != 429 || a.hdr.Get("Retry-After") == "" || a.hdr.Get("Content-Type") != "application/problem+json" {
		t.Errorf("over the rate: %s %v", a, a.hdr)
	}
	if a := call(t, limited, "POST", "/api/check", map[string]any{"id": 1}, bearer(token)); a.code != 429 || a.json(t)["code"] != -1.0 {
		t.Errorf("over the rate, octans: %s", a)
	}
	secret := newApp(t, s, "busy", false, "biz:2")
	for range 2 {
		call(t, limited, "POST", "/api/v3/get_job_instance_status", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "2", "job_instance_id": 1}, bkAuth("busy", secret, ""))
	}
	a = call(t, limited, "POST", "/api/v3/get_job_instance_status", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "2", "job_instance_id": 1}, bkAuth("busy", secret, ""))
	if a.code != 429 || a.json(t)["result"] != false || a.hdr.Get("Retry-After") == "" {
		t.Errorf("over the rate, bkjob: %s", a)
	}
	for i := range 10 {
		if a := call(t, limited, "GET", "/v1/jobs", nil, bearer(s.Token)); a.code != 200 {
			t.Fatalf("admin request %d: %s", i, a)
		}
	}
}

// TestWritesAreAudited: each write is an audit event with its actor,
// scope, source address, surface and correlation id.
func TestWritesAreAudited(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1})
	s.StartAgentScoped(t, "w2", "10.0.2.1", "biz:2")
	token, tokID := newToken(t, s, "audrey", "operator", "biz:2")
	h := bearer(token)
	h["X-Correlation-ID"] = "corr-77"
	id := jobID(t, call(t, s.APIURL, "POST", "/v1/jobs", nativeScript("sleep 20", "", "10.0.2.1"), h))
	if a := call(t, s.APIURL, "POST", fmt.Sprintf("/v1/jobs/%d/stop", id), nil, h); a.code != 202 {
		t.Fatalf("stop: %s", a)
	}
	// the admin's writes: an account alias, and an agent enrolled (w2,
	// above) and revoked
	if a := call(t, s.APIURL, "PUT", "/v1/accounts/biz:2/app", map[string]any{"os_user": "nobody"}, bearer(s.Token)); a.code != 200 {
		t.Fatalf("account set: %s", a)
	}
	if a := call(t, s.APIURL, "POST", "/v1/agents/w2/revoke", nil, bearer(s.Token)); a.code != 200 {
		t.Fatalf("revoke: %s", a)
	}
	want := []struct{ action, object, actor string }{
		{api.AuditCredentialCreate, tokID, "admin"},
		{api.AuditSubmit, strconv.FormatInt(id, 10), "audrey"},
		{api.AuditStop, strconv.FormatInt(id, 10), "audrey"},
		{api.AuditEnrolmentCreate, "w2", "admin"},
		{api.AuditAccountSet, "biz:2/app", "admin"},
		{api.AuditAgentRevoke, "w2", "admin"},
	}
	for _, w := range want {
		rec := auditEvent(t, s, w.action, w.object)
		if rec.Actor != w.actor || rec.Source != "127.0.0.1" || rec.Surface != "native" {
			t.Errorf("%s %s: %+v", w.action, w.object, rec)
		}
		if (w.action == api.AuditSubmit || w.action == api.AuditStop) && (rec.Scope != "biz:2" || rec.CorrelationID != "corr-77" || rec.Role != api.RoleOperator) {
			t.Errorf("%s %s: %+v", w.action, w.object, rec)
		}
	}
}

// auditEvent finds the audit record of action on object: audit records go
// out in batches per action (events.KindBatches), so it reads them all.
func auditEvent(t *testing.T, s *testenv.System, action, object string) api.AuditRecord {
	t.Helper()
	var rec api.AuditRecord
	testenv.Eventually(t, 10*time.Second, func() bool {
		ctx := context.Background()
		cons, err := s.JS.OrderedConsumer(ctx, schemas.StreamEvents, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{schemas.SubjEventPrefix + action + ".>"}})
		if err != nil {
			return false
		}
		batch, err := cons.FetchNoWait(10000)
		if err != nil {
			return false
		}
		found := false
		for m := range batch.Messages() {
			all, err := events.DecodeAll(m.Headers(), m.Data())
			if err != nil {
				continue
			}
			for _, d := range all {
				if d.Subject == object && json.Unmarshal(d.Data, &rec) == nil {
					found = true
				}
			}
		}
		return found
	}, "audit event %s %s", action, object)
	return rec
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
