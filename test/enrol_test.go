package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/internal/agentkeys"
	"github.com/fleetjob/fleetjob/internal/roles"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
)

// problem is an RFC 9457 answer.
type problem struct {
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Errors []struct {
		Field string `json:"field"`
	} `json:"errors"`
}

// enrolReq sends POST /v1/enrol with tok for agent id and keys; it
// returns the status and the problem, if the answer is one.
func enrolReq(t *testing.T, s *testenv.System, tok, id string, body map[string]any) (int, problem) {
	t.Helper()
	code, b := s.Do(t, "POST", "/v1/enrol", body, map[string]string{"Authorization": "Bearer " + tok})
	var p problem
	if code >= 400 {
		if err := json.Unmarshal(b, &p); err != nil || p.Status != code {
			t.Fatalf("enrol %s: %d answered %q, want a problem document", id, code, b)
		}
	}
	return code, p
}

func keysBody(t *testing.T, id string) map[string]any {
	t.Helper()
	k, err := agentkeys.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return map[string]any{"agent": id, "nkey": k.UserPublic(), "xkey": k.CurvePublic(), "hostname": "h-" + id}
}

// An enrolment token enrols one agent once: a second use is refused 401,
// and of many concurrent uses exactly one wins. The record written is the
// token's grant with the agent's public keys.
func TestEnrolmentTokenWorksOnce(t *testing.T) {
	s := testenv.Start(t, testenv.Options{})
	tok := s.EnrolToken(t, map[string]any{"scope": "biz:2", "hosts": []any{"10.0.0.5", map[string]any{"cloud_id": 3, "ip": "10.0.0.6"}},
		"labels": map[string]string{"rack": "r1"}, "host_ids": []int64{101}, "ttl": "10m"})
	body := keysBody(t, "e1")
	if code, p := enrolReq(t, s, tok, "e1", body); code != http.StatusCreated {
		t.Fatalf("first use: %d %+v", code, p)
	}
	if code, p := enrolReq(t, s, tok, "e2", keysBody(t, "e2")); code != http.StatusUnauthorized {
		t.Fatalf("second use: %d %+v, want 401", code, p)
	}
	var rec schemas.Enrolment
	if code := s.JSON(t, "GET", "/v1/agents/e1/enrolment", nil, nil, &rec); code != 200 {
		t.Fatalf("enrolment of e1: %d", code)
	}
	if rec.Scope.String() != "biz:2" || rec.NKey != body["nkey"] || rec.XKey != body["xkey"] || rec.Labels["rack"] != "r1" || len(rec.HostIDs) != 1 || rec.HostIDs[0] != 101 ||
		!rec.Allows(schemas.Host{CloudID: 3, IP: "10.0.0.6"}) || rec.Allows(schemas.Host{IP: "10.0.0.6"}) {
		t.Fatalf("enrolment record %+v", rec)
	}
	// the token is stored only as its hash
	kv, _ := s.JS.KeyValue(context.Background(), schemas.BucketEnrolments)
	tok2 := s.EnrolToken(t, map[string]any{"hosts": []string{"10.0.0.7"}})
	keys, _ := kv.ListKeys(context.Background())
	for k := range keys.Keys() {
		if strings.Contains(tok2, k) || strings.Contains(k, tok2) {
			t.Fatalf("token stored in clear: %s", k)
		}
	}

	// many uses at once: one wins
	const n = 8
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		b := keysBody(t, fmt.Sprintf("race%d", i))
		wg.Go(func() { codes[i], _ = enrolReq(t, s, tok2, fmt.Sprintf("race%d", i), b) })
	}
	wg.Wait()
	won := 0
	for _, c := range codes {
		switch c {
		case http.StatusCreated:
			won++
		case http.StatusUnauthorized:
		default:
			t.Errorf("concurrent use answered %d", c)
		}
	}
	if won != 1 {
		t.Fatalf("%d concurrent uses of one token succeeded (%v), want 1", won, codes)
	}
}

// Everything wrong with an enrolment is refused in a problem document; a
// refusal that is the request's fault leaves the token usable.
func TestEnrolmentRefusals(t *testing.T) {
	s := testenv.Start(t, testenv.Options{})
	// only an admin makes tokens
	for _, auth := range []string{"", "Bearer nope"} {
		h := map[string]string{"Authorization": auth}
		if code, _ := s.Do(t, "POST", "/v1/enrolments", map[string]any{"hosts": []string{"10.0.0.5"}}, h); code != 401 {
			t.Errorf("token made with Authorization %q: %d, want 401", auth, code)
		}
	}
	// and only a sound grant
	for _, bad := range []map[string]any{
		{"hosts": []string{}},
		{"hosts": []string{"10.0.0"}},
		{"hosts": []string{"10.0.0.5"}, "scope": "team:1"},
		{"hosts": []string{"10.0.0.5"}, "ttl": "720h"},
		{"hosts": []string{"10.0.0.5"}, "ttl": "-1s"},
		{"hosts": []string{"10.0.0.5"}, "agent": "a.b"},
		{"hosts": []string{"10.0.0.5"}, "ranges": []map[string]any{{"first": "10.0.0.1", "last": "10.0.0.9"}}},
		{"hosts": []string{"10.0.0.5"}, "labels": map[string]string{"": "x"}},
		{"hosts": []string{"10.0.0.5"}, "host_ids": []int64{0}},
	} {
		if code, b := s.Do(t, "POST", "/v1/enrolments", bad, nil); code != 400 || !strings.Contains(string(b), "problem") && !strings.Contains(string(b), "errors") {
			t.Errorf("token for %v: %d %s, want 400", bad, code, b)
		}
	}
	// an admin token is not an enrolment token, nor is nothing
	if code, _ := enrolReq(t, s, s.Token, "x1", keysBody(t, "x1")); code != 401 {
		t.Errorf("enrol with the admin token: %d, want 401", code)
	}
	if code, _ := enrolReq(t, s, "", "x1", keysBody(t, "x1")); code != 401 {
		t.Errorf("enrol without a token: %d, want 401", code)
	}
	// expired
	short := s.EnrolToken(t, map[string]any{"hosts": []string{"10.0.0.5"}, "ttl": "1s"})
	time.Sleep(1100 * time.Millisecond)
	if code, _ := enrolReq(t, s, short, "x1", keysBody(t, "x1")); code != 401 {
		t.Errorf("expired token: %d, want 401", code)
	}
	// bad keys, a private key, another agent than the token's: 400, and the token still works
	tok := s.EnrolToken(t, map[string]any{"agent": "x2", "hosts": []string{"10.0.0.5"}})
	good := keysBody(t, "x2")
	seed, _ := agentkeys.LoadOrCreate(t.TempDir())
	priv, _ := seed.User.Seed()
	for _, c := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"agent": "x2", "nkey": "UABC", "xkey": good["xkey"]}, "nkey"},
		{map[string]any{"agent": "x2", "nkey": string(priv), "xkey": good["xkey"]}, "nkey"},
		{map[string]any{"agent": "x2", "nkey": good["nkey"], "xkey": good["nkey"]}, "xkey"},
		{map[string]any{"agent": "x3", "nkey": good["nkey"], "xkey": good["xkey"]}, "agent"},
		{map[string]any{"agent": "x2", "nkey": good["nkey"], "xkey": good["xkey"], "seed": "x"}, "seed"},
	} {
		code, p := enrolReq(t, s, tok, "x2", c.body)
		if code != 400 || len(p.Errors) == 0 || p.Errors[0].Field != c.field {
			t.Errorf("enrol %v: %d %+v, want 400 on %s", c.body, code, p, c.field)
		}
	}
	if code, p := enrolReq(t, s, tok, "x2", good); code != 201 {
		t.Fatalf("enrol after refused attempts: %d %+v", code, p)
	}
	// an agent id enrolled already is a conflict, and the token survives it
	again := s.EnrolToken(t, map[string]any{"hosts": []string{"10.0.0.5"}})
	if code, _ := enrolReq(t, s, again, "x2", keysBody(t, "x2")); code != 409 {
		t.Errorf("enrol x2 twice: %d, want 409", code)
	}
	// revoked, it may enrol again, with new keys only
	if code, b := s.Do(t, "POST", "/v1/agents/x2/revoke", nil, map[string]string{"Authorization": "Bearer nope"}); code != 401 {
		t.Errorf("revoke without the admin token: %d %s", code, b)
	}
	if code, b := s.Do(t, "POST", "/v1/agents/x2/revoke", nil, nil); code != 200 {
		t.Fatalf("revoke x2: %d %s", code, b)
	}
	if code, _ := s.Do(t, "POST", "/v1/agents/nobody/revoke", nil, nil); code != 404 {
		t.Errorf("revoke an agent never enrolled: %d, want 404", code)
	}
	if code, _ := enrolReq(t, s, again, "x2", good); code != 400 {
		t.Errorf("re-enrol with the revoked key: %d, want 400", code)
	}
	if code, p := enrolReq(t, s, again, "x2", keysBody(t, "x2")); code != 201 {
		t.Errorf("re-enrol a revoked agent with new keys: %d %+v", code, p)
	}
}

// runAgent runs an agent in the test process as it would run on a host
// that claims ip, without waiting for it to be accepted.
func runAgent(t *testing.T, s *testenv.System, id, ip, dir string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := s.P
	p.Reg = prometheus.NewRegistry()
	// valid NATS credentials of its own (made by the test, not by an
	// enrolment): what is judged here is the claim
	p.NC = s.AgentConn(t, id, nats.MaxReconnects(-1))
	js, err := jetstream.New(p.NC)
	if err != nil {
		t.Fatal(err)
	}
	p.JS = js
	done := testenv.Go(func() error {
		return roles.RunAgent(ctx, p, agent.Config{ID: id, IP: ip, Version: "test", DataDir: dir, Slots: 4,
			Heartbeat: 500 * time.Millisecond, ShutdownGrace: time.Second, Topology: p.Top}, nil)
	})
	t.Cleanup(func() { cancel(); testenv.Returned(t, done, 10*time.Second, "agent "+id) })
}

func refusedClaims(t *testing.T, s *testenv.System, reason string) string {
	t.Helper()
	resp, err := http.Get(s.APIURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, `fleetjob_registry_claims_refused_total{reason="`+reason+`"}`) {
			return strings.Fields(l)[1]
		}
	}
	return "0"
}

func agentListed(t *testing.T, s *testenv.System, id string) bool {
	t.Helper()
	var out struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	s.JSON(t, "GET", "/v1/agents?size=10000", nil, nil, &out)
	for _, a := range out.Items {
		if a.ID == id {
			return true
		}
	}
	return false
}

// An agent whose registry record claims a host its enrolment does not
// allow never gets that host's work: the host is not served, the claim
// is counted and the agent is not listed. So is an agent never enrolled.
func TestRegistryRefusesClaimsOutsideEnrolment(t *testing.T) {
	s := testenv.Start(t, testenv.Options{Workers: 1})
	runs := newLedger(t)
	dir := t.TempDir()
	s.Enrol(t, "liar", "127.0.9.1", dir, "")
	runAgent(t, s, "liar", "127.0.9.2", dir)             // enrolled for .1, claims .2
	runAgent(t, s, "stranger", "127.0.9.3", t.TempDir()) // never enrolled
	testenv.Eventually(t, 10*time.Second, func() bool {
		return refusedClaims(t, s, "host_not_enrolled") != "0" && refusedClaims(t, s, "not_enrolled") != "0"
	}, "both claims refused and counted")
	body := script(runs.append("ran"), "127.0.9.2", "127.0.9.3")
	body["agent_wait"] = 1
	id := submit(t, s, body, nil)
	waitJob(t, s, id, 20*time.Second)
	for _, ip := range []string{"127.0.9.2", "127.0.9.3"} {
		if h := hostByIP(t, s, id, ip); h.Status != schemas.HostAgentOffline {
			t.Errorf("host %s claimed outside an enrolment: %s, want agent_offline", ip, h.Status)
		}
	}
	if got := runs.lines(t); len(got) != 0 {
		t.Fatalf("scripts ran for refused claims: %v", got)
	}
	if agentListed(t, s, "liar") || agentListed(t, s, "stranger") {
		t.Fatal("an agent with a refused claim is listed")
	}
}

// A revoked agent stops getting work at once: the revocation is the
// API's answer, and the next job for its host finds it gone.
func TestRevokedAgentGetsNoTasks(t *testing.T) {
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"r1=127.0.9.11"}})
	runs := newLedger(t)
	id := submit(t, s, script(runs.append("before"), "127.0.9.11"), nil)
	if sum := waitJob(t, s, id, 20*time.Second); sum.Status != schemas.JobSuccess {
		t.Fatalf("job before the revocation: %s", sum.Status)
	}
	var rec schemas.Enrolment
	if code := s.JSON(t, "POST", "/v1/agents/r1/revoke", nil, nil, &rec); code != 200 || rec.Revoked == nil {
		t.Fatalf("revoke: %d %+v", code, rec)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return !agentListed(t, s, "r1") }, "r1 gone from the agent list")
	body := script(runs.append("after"), "127.0.9.11")
	body["agent_wait"] = 1
	id = submit(t, s, body, nil)
	waitJob(t, s, id, 20*time.Second)
	if h := hostByIP(t, s, id, "127.0.9.11"); h.Status != schemas.HostAgentOffline {
		t.Errorf("host of a revoked agent: %s, want agent_offline", h.Status)
	}
	if got := runs.lines(t); len(got) != 1 || got[0] != "before" {
		t.Fatalf("runs %v, want only the one before the revocation", got)
	}
	if refusedClaims(t, s, "revoked") == "0" {
		t.Error("the revoked agent's heartbeats are not counted as refused")
	}
}
