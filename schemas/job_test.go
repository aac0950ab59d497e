package schemas

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func TestHostUnmarshal(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     Host
		err      bool
	}{
		{"plain ip", `"10.0.0.1"`, Host{IP: "10.0.0.1"}, false},
		{"object", `{"cloud_id": 2, "ip": "10.0.0.1"}`, Host{CloudID: 2, IP: "10.0.0.1"}, false},
		{"unknown field", `{"cloud": 2, "ip": "10.0.0.1"}`, Host{}, true},
		{"number", `7`, Host{}, true},
		{"any case, as encoding/json", `{"IP": "10.0.0.1", "Cloud_ID": 3}`, Host{CloudID: 3, IP: "10.0.0.1"}, false},
		{"cloud id not a number", `{"cloud_id": "2", "ip": "10.0.0.1"}`, Host{}, true},
		{"ip not a string", `{"ip": 10}`, Host{}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got Host
			err := json.Unmarshal([]byte(c.in), &got)
			if (err != nil) != c.err {
				t.Fatalf("err %v, want error %v", err, c.err)
			}
			if diff := cmp.Diff(got, c.want); !c.err && diff != "" {
				t.Errorf("(-got +want)\n%s", diff)
			}
		})
	}
}

func TestParseHost(t *testing.T) {
	for in, want := range map[string]Host{
		"10.0.0.1": {IP: "10.0.0.1"}, "3:10.0.0.1": {CloudID: 3, IP: "10.0.0.1"},
		"::1": {IP: "::1"}, "::ffff:10.0.0.1": {IP: "10.0.0.1"},
	} {
		got, err := ParseHost(in)
		if err != nil || got != want {
			t.Errorf("ParseHost(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "10.0.0.256", "-1:10.0.0.1"} {
		if _, err := ParseHost(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseHost(%q): got %v, want ErrInvalid", in, err)
		}
	}
}

func validSpec() JobSpec {
	return JobSpec{
		Targets: []Host{{IP: "10.0.0.1"}, {IP: "10.0.0.2"}, {IP: "10.0.0.1"}},
		Steps:   []Step{{Script: &Script{Content: "echo hi"}}},
	}
}

func TestNormalizeDefaults(t *testing.T) {
	s := validSpec()
	s.Concurrency = 3
	if err := s.Normalize(); err != nil {
		t.Fatal(err)
	}
	st := s.Steps[0]
	got := []any{s.Name, s.AgentWait, st.Type, st.Timeout, st.Concurrency, st.Script.Interpreter, len(st.Targets)}
	want := []any{"job", DefaultAgentWait, StepScript, DefaultTimeoutSecs, 3, "bash", 2}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("defaults (-got +want)\n%s", diff)
	}
}

func TestNormalizeRejects(t *testing.T) {
	for _, c := range []struct {
		name  string
		edit  func(*JobSpec)
		field string
	}{
		{"no steps", func(s *JobSpec) { s.Steps = nil }, "steps"},
		{"no targets", func(s *JobSpec) { s.Targets = nil }, "steps[0].targets"},
		{"bad target", func(s *JobSpec) { s.Targets = []Host{{IP: "nope"}} }, "targets[0]"},
		{"negative cloud", func(s *JobSpec) { s.Targets = []Host{{CloudID: -1, IP: "10.0.0.1"}} }, "targets[0].cloud_id"},
		{"bad step target", func(s *JobSpec) { s.Steps[0].Targets = []Host{{IP: "10.0.0.1"}, {IP: "x"}} }, "steps[0].targets[1]"},
		{"negative timeout", func(s *JobSpec) { s.Steps[0].Timeout = -5 }, "steps[0].timeout"},
		{"huge timeout", func(s *JobSpec) { s.Steps[0].Timeout = MaxTimeoutSeconds + 1 }, "steps[0].timeout"},
		{"negative concurrency", func(s *JobSpec) { s.Concurrency = -1 }, "concurrency"},
		{"unknown type", func(s *JobSpec) { s.Steps[0] = Step{Type: "deploy"} }, "steps[0].type"},
		{"script step without script", func(s *JobSpec) { s.Steps[0] = Step{Type: StepScript} }, "steps[0].script"},
		{"file step without file", func(s *JobSpec) { s.Steps[0] = Step{Type: StepFile} }, "steps[0].file"},
		{"script and file", func(s *JobSpec) { s.Steps[0].File = &FileSpec{Destination: "/tmp"} }, "steps[0]"},
		{"neither script nor file", func(s *JobSpec) { s.Steps[0] = Step{} }, "steps[0]"},
		{"type against body", func(s *JobSpec) { s.Steps[0].Type = StepFile }, "steps[0].type"},
		{"empty script", func(s *JobSpec) { s.Steps[0].Script.Content = " \n" }, "steps[0].script.content"},
		{"big script", func(s *JobSpec) { s.Steps[0].Script.Content = strings.Repeat("x", MaxScriptBytes+1) }, "steps[0].script.content"},
		{"interpreter", func(s *JobSpec) { s.Steps[0].Script.Interpreter = "ruby" }, "steps[0].script.interpreter"},
		{"env name", func(s *JobSpec) { s.Steps[0].Script.Env = map[string]string{"A-B": "x"} }, "steps[0].script.env"},
		{"user", func(s *JobSpec) { s.Steps[0].Script.User = "root; rm" }, "steps[0].script.user"},
		{"agent wait", func(s *JobSpec) { s.AgentWait = -1 }, "agent_wait"},
		{"long name", func(s *JobSpec) { s.Name = strings.Repeat("n", MaxNameLen+1) }, "name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := validSpec()
			c.edit(&s)
			err := s.Normalize()
			var fe FieldErrors
			if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want FieldErrors wrapping ErrInvalid", err)
			}
			for _, f := range fe {
				if f.Field == c.field {
					return
				}
			}
			t.Errorf("errors %v do not name %q", fe, c.field)
		})
	}
}

func TestHostTableRoundTrip(t *testing.T) {
	ht := NewHostTable(5)
	ht.Set(1, HostRunning, 7)
	ht.Set(4, HostAgentOffline, 1<<31)
	b, err := json.Marshal(ht)
	if err != nil {
		t.Fatal(err)
	}
	var got HostTable
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, ht); diff != "" {
		t.Errorf("(-got +want)\n%s", diff)
	}
	if c := got.Counts(); c["pending"] != 3 || c["running"] != 1 || c["agent_offline"] != 1 {
		t.Errorf("counts %v", c)
	}
	if err := json.Unmarshal([]byte(`{"status":"AAA=","since":"AA=="}`), &got); err == nil {
		t.Error("mismatched columns accepted")
	}
}

// TestSubmitGolden pins the wire form of the submit command.
func TestSubmitGolden(t *testing.T) {
	s := validSpec()
	s.Name, s.CorrelationID, s.Surface = "golden", "1-1", "native"
	s.Steps[0].Script.Env = map[string]string{"A": "1"}
	if err := s.Normalize(); err != nil {
		t.Fatal(err)
	}
	cmd := SubmitCommand{V: MessageVersion, Spec: s, SubmittedAt: time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)}
	got, _ := json.MarshalIndent(cmd, "", "  ")
	path := filepath.Join("testdata", "submit.golden.json")
	if *update {
		os.WriteFile(path, append(got, '\n'), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if diff := cmp.Diff(string(got)+"\n", string(want)); diff != "" {
		t.Errorf("submit command changed shape (-got +want):\n%s", diff)
	}
	var back SubmitCommand
	if err := json.Unmarshal(want, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(back, cmd); diff != "" {
		t.Errorf("round trip (-got +want)\n%s", diff)
	}
}

// FuzzSubmit feeds arbitrary bytes through decode and validation: nothing
// may panic, and what validates must survive a round trip unchanged.
func FuzzSubmit(f *testing.F) {
	f.Add([]byte(`{"spec":{"targets":["10.0.0.1"],"steps":[{"script":{"content":"x"}}]}}`))
	f.Add([]byte(`{"spec":{"targets":[{"cloud_id":1,"ip":"::1"}],"steps":[{"type":"script","timeout":-1}]}}`))
	f.Add([]byte(`{"spec":{"steps":[{"script":{"content":"x","env":{"":""}}}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var cmd SubmitCommand
		if json.Unmarshal(b, &cmd) != nil {
			return
		}
		if cmd.Spec.Normalize() != nil {
			return
		}
		again, _ := json.Marshal(cmd.Spec)
		var back JobSpec
		if err := json.Unmarshal(again, &back); err != nil {
			t.Fatalf("valid spec does not decode: %v", err)
		}
		if err := back.Normalize(); err != nil {
			t.Fatalf("valid spec invalid after round trip: %v", err)
		}
	})
}

// A small job's tasks may inline up to MaxInlineLog of output, a larger
// job's script steps MaxSegmentInlineLog, a file step's transfers nothing.
func TestInlineLogLimit(t *testing.T) {
	targets := func(n int) []Host {
		hs := make([]Host, n)
		for i := range hs {
			hs[i] = Host{IP: fmt.Sprintf("10.0.0.%d", i+1)}
		}
		return hs
	}
	script := func(n int) Step { return Step{Type: StepScript, Script: &Script{Content: "true"}, Targets: targets(n)} }
	file := Step{Type: StepFile, File: &FileSpec{Destination: "/tmp"}, Targets: targets(1)}
	for _, c := range []struct {
		name string
		spec JobSpec
		want []int // by step, then one past the last
	}{
		{"small", JobSpec{Steps: []Step{script(1)}}, []int{MaxInlineLog, 0}},
		{"small, two steps", JobSpec{Steps: []Step{script(8), script(8)}}, []int{MaxInlineLog, MaxInlineLog, 0}},
		{"larger", JobSpec{Steps: []Step{script(MaxInlineResults + 1)}}, []int{MaxSegmentInlineLog, 0}},
		{"with a file step", JobSpec{Steps: []Step{script(1), file}}, []int{MaxSegmentInlineLog, 0, 0}},
	} {
		for step, want := range c.want {
			if got := c.spec.InlineLogLimit(step); got != want {
				t.Errorf("%s: step %d: got %d, want %d", c.name, step, got, want)
			}
		}
	}
}
