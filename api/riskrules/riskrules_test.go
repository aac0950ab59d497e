package riskrules

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetjob/fleetjob/schemas"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// testRules are small rules whose matches are easy to see, for testing the
// engine rather than the defaults.
var testRules = []Rule{
	{ID: "boom", Pattern: `\bboom\b`, Action: ActionIntercept, Description: "explodes"},
	{ID: "warn", Pattern: `\bwarn\b`, Action: ActionScan, Description: "worth a look"},
	{ID: "py-only", Languages: []string{"python3"}, Pattern: `\bsnake\b`, Action: ActionScan},
	{ID: "bare", Pattern: `\bbare\b`, Action: ActionIntercept},
}

func newTestEngine(t *testing.T) *Engine {
	t.Helper()
	e, err := New(testRules)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestCheckLines(t *testing.T) {
	e := newTestEngine(t)
	long := "warn " + strings.Repeat("é", 300)
	for _, c := range []struct {
		name, lang, script string
		want               []Finding
	}{
		{"empty", "bash", "", nil},
		{"one line", "bash", "echo warn", []Finding{
			{RuleID: "warn", Action: ActionScan, Description: "worth a look", Line: 1, Text: "echo warn"},
		}},
		{"line numbers and trimming", "bash", "\n\n   x; warn   \n", []Finding{
			{RuleID: "warn", Action: ActionScan, Description: "worth a look", Line: 3, Text: "x; warn"},
		}},
		{"two rules on one line, rule order", "bash", "warn && boom", []Finding{
			{RuleID: "boom", Action: ActionIntercept, Description: "explodes", Line: 1, Text: "warn && boom"},
			{RuleID: "warn", Action: ActionScan, Description: "worth a look", Line: 1, Text: "warn && boom"},
		}},
		{"comments skipped", "bash", "#!/bin/bash\n# boom\n  \t# warn\necho ok # boom", []Finding{
			{RuleID: "boom", Action: ActionIntercept, Description: "explodes", Line: 4, Text: "echo ok # boom"},
		}},
		{"python comments skipped", "python3", "# snake\nx = 1  # snake", []Finding{
			{RuleID: "py-only", Action: ActionScan, Line: 2, Text: "x = 1  # snake"},
		}},
		{"continuation joins lines", "bash", "echo a \\\n  b \\\n  warn\necho warn", []Finding{
			{RuleID: "warn", Action: ActionScan, Description: "worth a look", Line: 1, Text: "echo a   b   warn"},
			{RuleID: "warn", Action: ActionScan, Description: "worth a look", Line: 4, Text: "echo warn"},
		}},
		{"continuation splits a word", "bash", "echo bo\\\nom", []Finding{
			{RuleID: "boom", Action: ActionIntercept, Description: "explodes", Line: 1, Text: "echo boom"},
		}},
		{"escaped backslash does not continue", "bash", "echo bo\\\\\nom", nil},
		{"comment does not continue", "bash", "# x \\\nwarn", []Finding{
			{RuleID: "warn", Action: ActionScan, Description: "worth a look", Line: 2, Text: "warn"},
		}},
		{"continuation at end of script", "bash", "echo \\\nwarn \\", []Finding{
			{RuleID: "warn", Action: ActionScan, Description: "worth a look", Line: 1, Text: "echo warn"},
		}},
		{"crlf", "bash", "echo ok\r\necho \\\r\nwarn\r\n", []Finding{
			{RuleID: "warn", Action: ActionScan, Description: "worth a look", Line: 2, Text: "echo warn"},
		}},
		{"text clipped to 200 characters", "bash", long, []Finding{
			{RuleID: "warn", Action: ActionScan, Description: "worth a look", Line: 1, Text: "warn " + strings.Repeat("é", 194) + "…"},
		}},
		{"invalid utf-8 replaced", "bash", "warn \xff", []Finding{
			{RuleID: "warn", Action: ActionScan, Description: "worth a look", Line: 1, Text: "warn \uFFFD"},
		}},
		{"language rule skipped for bash", "bash", "snake", nil},
		{"language rule kept for python3", "python3", "snake", []Finding{
			{RuleID: "py-only", Action: ActionScan, Line: 1, Text: "snake"},
		}},
		{"empty language is bash", "", "snake; warn", []Finding{
			{RuleID: "warn", Action: ActionScan, Description: "worth a look", Line: 1, Text: "snake; warn"},
		}},
		{"unknown language gets language-free rules", "ruby", "snake; warn", []Finding{
			{RuleID: "warn", Action: ActionScan, Description: "worth a look", Line: 1, Text: "snake; warn"},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, _ := e.Check(c.lang, c.script)
			if diff := cmp.Diff(got, c.want); diff != "" {
				t.Errorf("(-got +want):\n%s", diff)
			}
		})
	}
}

func TestCheckError(t *testing.T) {
	e := newTestEngine(t)
	for _, c := range []struct {
		name, script, want string
	}{
		{"scan only", "warn\nwarn", ""},
		{"one intercept", "echo ok\nwarn\nboom", `script line 3 matches high-risk rule "boom" (explodes): refused`},
		{"no description", "bare", `script line 1 matches high-risk rule "bare": refused`},
		{"two intercepts", "boom\nbare", `script line 1 matches high-risk rule "boom" (explodes) and 1 more intercept match: refused`},
		{"three intercepts", "warn\nboom bare\nboom", `script line 2 matches high-risk rule "boom" (explodes) and 2 more intercept matches: refused`},
	} {
		t.Run(c.name, func(t *testing.T) {
			findings, err := e.Check("bash", c.script)
			if len(findings) == 0 {
				t.Error("no findings")
			}
			if c.want == "" {
				if err != nil {
					t.Errorf("err %v; want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("err nil; want %q", c.want)
			}
			if got := err.Error(); got != c.want {
				t.Errorf("err %q; want %q", got, c.want)
			}
			if !errors.Is(err, ErrIntercepted) || !errors.Is(err, schemas.ErrInvalid) {
				t.Errorf("err %v: want it to wrap ErrIntercepted and schemas.ErrInvalid", err)
			}
		})
	}
}

func TestCheckDefaultsError(t *testing.T) {
	e, err := New(Defaults())
	if err != nil {
		t.Fatal(err)
	}
	findings, err := e.Check("bash", "set -e\nreboot\nsudo rm -rf /\n")
	want := `script line 3 matches high-risk rule "rm-root" (recursive rm of / or a top-level system directory): refused`
	if err == nil || err.Error() != want {
		t.Errorf("err %v; want %q", err, want)
	}
	if diff := cmp.Diff(ruleIDs(findings), []string{"shutdown-reboot", "rm-root"}); diff != "" {
		t.Errorf("(-got +want):\n%s", diff)
	}
}

func TestNilEngine(t *testing.T) {
	var e *Engine
	got, err := e.Check("bash", "rm -rf /")
	if got != nil || err != nil {
		t.Errorf("got %v, %v; want nothing", got, err)
	}
}

func TestNew(t *testing.T) {
	good := Rule{ID: "ok", Pattern: "x", Action: ActionScan}
	for _, c := range []struct {
		name  string
		rules []Rule
		want  []string // substrings of the error; none: no error
	}{
		{"empty set", nil, nil},
		{"good", []Rule{good, {ID: "ok2", Languages: []string{"bash", "sh", "python3"}, Pattern: "y", Action: ActionIntercept}}, nil},
		{"bad pattern", []Rule{good, {ID: "broken", Pattern: `rm (-rf`, Action: ActionScan}}, []string{`rule "broken": pattern: error parsing regexp`}},
		{"backreference", []Rule{{ID: "backref", Pattern: `(a)\1`, Action: ActionScan}}, []string{`rule "backref": pattern`}},
		{"empty pattern", []Rule{{ID: "nothing", Action: ActionScan}}, []string{`rule "nothing": empty pattern`}},
		{"bad action", []Rule{{ID: "loud", Pattern: "x", Action: "block"}}, []string{`rule "loud": action "block"`}},
		{"missing action", []Rule{{ID: "quiet", Pattern: "x"}}, []string{`rule "quiet": action ""`}},
		{"bad language", []Rule{{ID: "rb", Languages: []string{"ruby"}, Pattern: "x", Action: ActionScan}}, []string{`rule "rb": unknown language "ruby"`}},
		{"empty id", []Rule{good, {Pattern: "x", Action: ActionScan}}, []string{`rule 1: id ""`}},
		{"odd id", []Rule{{ID: "has space", Pattern: "x", Action: ActionScan}}, []string{`rule "has space": id`}},
		{"duplicate id", []Rule{good, good}, []string{`rule "ok": duplicate id`}},
		{"every bad rule reported", []Rule{{ID: "a", Pattern: "(", Action: ActionScan}, good, {ID: "b", Pattern: "x", Action: "no"}}, []string{`rule "a"`, `rule "b"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, err := New(c.rules)
			if len(c.want) == 0 {
				if err != nil || e == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New accepted %+v", c.rules)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err %q; want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestNewCopiesLanguages(t *testing.T) {
	rules := []Rule{{ID: "x", Languages: []string{"python3"}, Pattern: "x", Action: ActionScan}}
	e, err := New(rules)
	if err != nil {
		t.Fatal(err)
	}
	rules[0].Languages[0] = "bash"
	if got, _ := e.Check("python3", "x"); len(got) != 1 {
		t.Errorf("findings %v after the caller changed its slice; want 1", got)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		name, path string
		want       []Rule
		err        string
	}{
		{"rules", write("ok.json", `{"rules": [
			{"id": "a", "languages": ["bash"], "pattern": "x", "action": "scan", "description": "d"},
			{"id": "b", "pattern": "y", "action": "intercept"}
		]}`), []Rule{
			{ID: "a", Languages: []string{"bash"}, Pattern: "x", Action: ActionScan, Description: "d"},
			{ID: "b", Pattern: "y", Action: ActionIntercept},
		}, ""},
		{"empty list", write("empty.json", `{"rules": []}`), []Rule{}, ""},
		{"missing file", filepath.Join(dir, "nope.json"), nil, "no such file"},
		{"not json", write("bad.json", `rules:`), nil, "invalid character"},
		{"misspelt key", write("typo.json", `{"rules": [{"id": "a", "patern": "x"}]}`), nil, `unknown field "patern"`},
		{"no rules key", write("none.json", `{}`), nil, `no "rules" list`},
		{"trailing data", write("two.json", `{"rules": []} {}`), nil, "data after"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Load(c.path)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("err %v; want it to contain %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got, c.want); diff != "" {
				t.Errorf("(-got +want):\n%s", diff)
			}
		})
	}
}

// TestDefaultsGolden pins testdata/defaults.json to Defaults(): the file
// documents the defaults as a rule file, and Load must read it back.
func TestDefaultsGolden(t *testing.T) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // patterns keep their < > & readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(struct {
		Rules []Rule `json:"rules"`
	}{Defaults()}); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	path := filepath.Join("testdata", "defaults.json")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if diff := cmp.Diff(got, string(want)); diff != "" {
		t.Errorf("default rules changed (-got +want), run go test -update:\n%s", diff)
	}
	back, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(back, Defaults()); diff != "" {
		t.Errorf("round trip (-got +want):\n%s", diff)
	}
}

// FuzzCheck feeds arbitrary scripts to the default rules: nothing may
// panic, findings must point into the script, and the error must agree with
// the findings.
func FuzzCheck(f *testing.F) {
	for _, c := range ruleCases {
		f.Add(c.lang, c.script)
	}
	for _, c := range ordinary {
		f.Add(c.lang, c.script)
	}
	f.Add("bash", "rm -rf \\\n/\r\n# boom \\\n\\\\\n\xff\x00")
	f.Add("", strings.Repeat("rm -rf ", 1000)+"/")
	e, err := New(Defaults())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, lang, script string) {
		findings, err := e.Check(lang, script)
		lines := strings.Count(script, "\n") + 1
		intercepted := false
		for _, fd := range findings {
			if fd.Line < 1 || fd.Line > lines {
				t.Errorf("line %d outside 1..%d", fd.Line, lines)
			}
			if n := utf8.RuneCountInString(fd.Text); n > MaxTextLen || !utf8.ValidString(fd.Text) {
				t.Errorf("text of %d runes, valid %v", n, utf8.ValidString(fd.Text))
			}
			if fd.Action == ActionIntercept {
				intercepted = true
			}
		}
		if intercepted != (err != nil) {
			t.Errorf("intercept findings %v but err %v", intercepted, err)
		}
		if err != nil && !errors.Is(err, ErrIntercepted) {
			t.Errorf("err %v does not wrap ErrIntercepted", err)
		}
		for _, r := range e.rules {
			if r.re.MatchString(script) && !r.pre.mayMatch(script) {
				t.Errorf("rule %q matches but its prefilter %q rejects the script", r.ID, r.pre)
			}
		}
	})
}

// BenchmarkCheck runs the default rules over a script at the size limit
// (check: not remembered), and Check over a script it has seen.
func BenchmarkCheck(b *testing.B) {
	e, err := New(Defaults())
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct{ name, lang, unit string }{
		{"shell", "bash", ordinary[2].script},
		{"python", "python3", ordinary[4].script},
		{"short lines", "bash", "x\n"},
		{"one long line", "bash", strings.Repeat("rm -rf a ", 100)},
	} {
		script := strings.Repeat(c.unit, schemas.MaxScriptBytes/len(c.unit))
		if c.name == "one long line" {
			script = strings.ReplaceAll(script, "\n", " ")
		}
		lines := strings.Count(script, "\n") + 1
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(script)))
			for b.Loop() {
				if refusal(e.check(c.lang, script)) != nil {
					b.Fatal("refused")
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/script")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(lines), "ns/line")
		})
	}
	b.Run("remembered", func(b *testing.B) {
		for b.Loop() {
			if _, err := e.Check("bash", "true"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A script checked before gets the same findings and refusal, and what a
// caller does to its findings does not change them.
func TestCheckRemembers(t *testing.T) {
	e, err := New(Defaults())
	if err != nil {
		t.Fatal(err)
	}
	for _, script := range []string{"rm -rf /", "echo ok", "true"} {
		f1, err1 := e.Check("bash", script)
		if len(f1) > 0 {
			f1[0].RuleID = "changed by the caller"
		}
		f2, err2 := e.Check("bash", script)
		want := e.check("bash", script)
		if !reflect.DeepEqual(f2, want) || (err1 == nil) != (err2 == nil) || (err2 == nil) != (refusal(want) == nil) {
			t.Errorf("%q: again %+v %v, want %+v %v", script, f2, err2, want, refusal(want))
		}
	}
	if _, err := e.Check("bash", "rm -rf /"); !errors.Is(err, ErrIntercepted) {
		t.Errorf("remembered refusal: %v", err)
	}
	for _, lang := range []string{"python3", "sh"} { // remembered per language
		if f, _ := e.Check(lang, "rm -rf /"); !reflect.DeepEqual(f, e.check(lang, "rm -rf /")) {
			t.Errorf("%s: %+v, want %+v", lang, f, e.check(lang, "rm -rf /"))
		}
	}
}
