package test

import (
	"testing"

	"github.com/fleetjob/fleetjob/internal/testenv"
)

// Octans task names are per scope: bob may take a name alice holds, each
// resolves the name to his own job, and a name is still refused again in
// its own scope.
func TestOctansNamesPerScope(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1})
	s.StartAgentScoped(t, "n2", "10.0.2.1", "biz:2")
	s.StartAgentScoped(t, "n3", "10.0.3.1", "biz:3")
	alice, _ := newToken(t, s, "alice", "operator", "biz:2")
	bob, _ := newToken(t, s, "bob", "operator", "biz:3")
	run := func(tok, ip string) answer {
		return call(t, s.APIURL, "POST", "/api/run", map[string]any{"nodes": []string{ip}, "user": "root", "name": "nightly",
			"tasks": []any{map[string]any{"name": "t", "shell": "true"}}}, bearer(tok))
	}
	ids := map[string]float64{}
	for who, r := range map[string]answer{alice: run(alice, "10.0.2.1"), bob: run(bob, "10.0.3.1")} {
		data, _ := r.json(t)["content"].(map[string]any)
		if r.code != 200 || data == nil {
			t.Fatalf("octans run named nightly: %s", r)
		}
		ids[who] = data["id"].(float64)
	}
	if a := run(alice, "10.0.2.1"); a.json(t)["code"] == 0.0 {
		t.Errorf("alice reuses her own octans name: %s", a)
	}
	for _, who := range []string{alice, bob} {
		a := call(t, s.APIURL, "POST", "/api/check", map[string]any{"name": "nightly"}, bearer(who))
		data, _ := a.json(t)["content"].(map[string]any)
		if data == nil || data["id"] != ids[who] {
			t.Errorf("check by name answered %s, want job %v", a, ids[who])
		}
	}
}
