package testenv

// Enrolment of test agents: through the API, as a real agent enrols.

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/fleetjob/fleetjob/internal/agentkeys"
	"github.com/fleetjob/fleetjob/schemas"
)

// StartAgentScoped starts an agent enrolled in scope ("biz:2"; "" for
// none) for its host, unless it is enrolled already; the returned
// function stops it.
func (s *System) StartAgentScoped(t testing.TB, id, ip, scope string) func() {
	t.Helper()
	if !s.enrolled(t, id) {
		s.Enrol(t, id, ip, s.agentDir(id), scope)
	}
	return s.StartAgent(t, id, ip)
}

func (s *System) enrolled(t testing.TB, id string) bool {
	t.Helper()
	kv, err := s.JS.KeyValue(context.Background(), schemas.BucketEnrolled)
	if err != nil {
		t.Fatal(err)
	}
	_, err = kv.Get(context.Background(), id)
	return err == nil
}

// EnrolResult is what the API answered an enrolment.
type EnrolResult struct {
	Agent    string   `json:"agent"`
	JWT      string   `json:"jwt"`
	NATSURLs []string `json:"nats_urls"`
}

// Enrol enrols agent id for host ip (cloud 0) in scope ("" for none) the
// way a real agent does: an admin makes an enrolment token, and the agent
// sends its public keys (made in dataDir, where an agent process started
// with --data-dir dataDir finds them, with the credentials it is issued)
// with it.
func (s *System) Enrol(t testing.TB, id, ip, dataDir, scope string) EnrolResult {
	t.Helper()
	return s.EnrolGrant(t, id, dataDir, map[string]any{"scope": scope, "hosts": []string{ip}})
}

// EnrolGrant is Enrol with a token for grant (the body of POST
// /v1/enrolments; its agent is id).
func (s *System) EnrolGrant(t testing.TB, id, dataDir string, grant map[string]any) EnrolResult {
	t.Helper()
	grant["agent"] = id
	if grant["ttl"] == nil {
		grant["ttl"] = "1m"
	}
	tok := s.EnrolToken(t, grant)
	keys, err := agentkeys.LoadOrCreate(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	res := s.EnrolWith(t, tok, id, keys)
	if res.JWT != "" {
		if err := agentkeys.WriteCreds(dataDir, res.JWT, keys); err != nil {
			t.Fatal(err)
		}
	}
	return res
}

// EnrolToken makes an enrolment token through the API (admin).
func (s *System) EnrolToken(t testing.TB, req map[string]any) string {
	t.Helper()
	var out struct {
		Token string `json:"token"`
	}
	if code, b := s.Do(t, "POST", "/v1/enrolments", req, nil); code != http.StatusCreated {
		t.Fatalf("create enrolment token: %d %s", code, b)
	} else if err := json.Unmarshal(b, &out); err != nil || out.Token == "" {
		t.Fatalf("enrolment token answer %s: %v", b, err)
	}
	return out.Token
}

// EnrolWith uses an enrolment token for agent id with keys, failing the
// test unless the API enrols it.
func (s *System) EnrolWith(t testing.TB, tok, id string, keys *agentkeys.Keys) EnrolResult {
	t.Helper()
	var out EnrolResult
	body := map[string]any{"agent": id, "nkey": keys.UserPublic(), "xkey": keys.CurvePublic()}
	if code := s.JSON(t, "POST", "/v1/enrol", body, map[string]string{"Authorization": "Bearer " + tok}, &out); code != http.StatusCreated {
		t.Fatalf("enrol %s: %d", id, code)
	}
	return out
}

func (s *System) agentDir(id string) string { return filepath.Join(s.Dir, "agent-"+id) }

// AgentDir is the data directory of the in-process agent id (its journal
// and its keys).
func (s *System) AgentDir(id string) string { return s.agentDir(id) }
