package api

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/fleetjob/fleetjob/internal/natsrv/natstest"
	"github.com/fleetjob/fleetjob/schemas"
)

// TestSealToEnrolledAgents seals a step's values, read from a real
// enrolled bucket, to every agent enrolled for its hosts (not revoked, with
// a curve key), each of which opens them; a host without such an agent is
// refused and the spec is left as it was.
func TestSealToEnrolledAgents(t *testing.T) {
	js, _ := jetstream.New(natstest.Conn(t))
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: schemas.BucketEnrolled})
	if err != nil {
		t.Fatal(err)
	}
	h1, h2, h3 := schemas.Host{IP: "10.0.0.1"}, schemas.Host{IP: "10.0.0.2"}, schemas.Host{IP: "10.0.0.3"}
	keys := map[string]nkeys.KeyPair{}
	enrol := func(id string, xkey bool, revoked bool, hosts ...schemas.Host) {
		kp, _ := nkeys.CreateCurveKeys()
		keys[id] = kp
		e := schemas.Enrolment{Agent: id, Hosts: hosts, Enrolled: time.Now()}
		if xkey {
			e.XKey, _ = kp.PublicKey()
		}
		if revoked {
			now := time.Now()
			e.Revoked = &now
		}
		b, _ := json.Marshal(e)
		if _, err := kv.Put(t.Context(), id, b); err != nil {
			t.Fatal(err)
		}
	}
	enrol("a1", true, false, h1)
	enrol("a1b", true, false, h1) // a second agent allowed on h1
	enrol("a2", true, false, h2)
	enrol("old", true, true, h2, h3) // revoked
	enrol("nokey", false, false, h3) // enrolled without a curve key

	apiKey, _ := nkeys.CreateCurveKeys()
	c := &Core{deps: Deps{SealKey: apiKey, Enrolments: KVEnrolments{KV: kv}}, Log: slog.New(slog.DiscardHandler)}
	spec := func(targets ...schemas.Host) *schemas.JobSpec {
		return &schemas.JobSpec{Steps: []schemas.Step{
			{Type: schemas.StepScript, Targets: targets, Script: &schemas.Script{Content: "true", Interpreter: "bash",
				Sensitive: true, Args: []string{"s3cret"}, Env: map[string]string{"K": "env-s3cret"}}},
			{Type: schemas.StepScript, Targets: []schemas.Host{h3}, Script: &schemas.Script{Content: "true", Args: []string{"plain"}}},
		}}
	}
	sp := spec(h1, h2)
	if err := c.seal(t.Context(), sp); err != nil {
		t.Fatal(err)
	}
	sc := sp.Steps[0].Script
	b, _ := json.Marshal(sp)
	if strings.Contains(string(b), "s3cret") || sc.Sealed == nil {
		t.Fatalf("sealed spec: %s", b)
	}
	var agents []string
	for a := range sc.Sealed.Keys {
		agents = append(agents, a)
	}
	slices.Sort(agents)
	if !slices.Equal(agents, []string{"a1", "a1b", "a2"}) {
		t.Errorf("sealed to %v, want a1, a1b, a2", agents)
	}
	for _, a := range agents {
		open, err := sc.ForAgent(a).Open(keys[a])
		if err != nil || open.Args[0] != "s3cret" || open.Env["K"] != "env-s3cret" {
			t.Errorf("agent %s: %v %+v", a, err, open)
		}
	}
	if sp.Steps[1].Script.Sealed != nil || sp.Steps[1].Script.Args[0] != "plain" {
		t.Errorf("a step without sensitive values changed: %+v", sp.Steps[1].Script)
	}

	sp = spec(h1, h3)
	err = c.seal(t.Context(), sp)
	if !errors.Is(err, schemas.ErrInvalid) || !strings.Contains(err.Error(), "steps[0].targets[1]") ||
		!strings.Contains(err.Error(), "cannot seal sensitive values for host 10.0.0.3: no enrolled agent") {
		t.Errorf("a host whose agents are revoked or have no curve key: got %v", err)
	}
	if sp.Steps[0].Script.Sealed != nil || sp.Steps[0].Script.Args[0] != "s3cret" {
		t.Errorf("a refused spec was changed: %+v", sp.Steps[0].Script)
	}
}

// TestSealRefusesArgsOnTheCommandLine: sensitive args for an interpreter
// that can only take them on its command line are refused.
func TestSealRefusesArgsOnTheCommandLine(t *testing.T) {
	apiKey, _ := nkeys.CreateCurveKeys()
	c := &Core{deps: Deps{SealKey: apiKey}}
	sp := &schemas.JobSpec{Steps: []schemas.Step{{Type: schemas.StepScript, Targets: []schemas.Host{{IP: "10.0.0.1"}},
		Script: &schemas.Script{Content: "print", Interpreter: "perl", Sensitive: true, Args: []string{"s3cret"}}}}}
	err := c.seal(t.Context(), sp)
	if !errors.Is(err, schemas.ErrInvalid) || !strings.Contains(err.Error(), "steps[0].script.args") {
		t.Errorf("got %v, want steps[0].script.args invalid", err)
	}
}

// TestSealKeyFile makes the API's curve key 0600 once and reads it back.
func TestSealKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "api.xk")
	kp, err := LoadOrCreateSealKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	again, err := LoadOrCreateSealKey(path)
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := kp.PublicKey()
	p2, _ := again.PublicKey()
	if p1 != p2 || !strings.HasPrefix(p1, "X") {
		t.Errorf("keys %s and %s", p1, p2)
	}
}
