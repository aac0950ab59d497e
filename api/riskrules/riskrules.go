package riskrules

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/fleetjob/fleetjob/schemas"
)

// Actions a rule can take when it matches.
const (
	// ActionScan records a finding on the job and lets the script run.
	ActionScan = "scan"
	// ActionIntercept refuses the script.
	ActionIntercept = "intercept"
)

// MaxTextLen bounds, in characters, the offending line a Finding carries.
const MaxTextLen = 200

// ErrIntercepted marks a script refused because an intercept rule matched.
// The errors Check returns also wrap schemas.ErrInvalid, so a surface's
// error handler answers 400 without knowing this package.
var ErrIntercepted = errors.New("refused")

var ruleID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// Rule is one high-risk command rule.
type Rule struct {
	// ID names the rule in findings and errors: letters, digits, '.', '_'
	// and '-', at most 64 characters.
	ID string `json:"id"`
	// Languages limits the rule to these interpreters (bash, sh, python3);
	// empty means every language.
	Languages []string `json:"languages,omitempty"`
	// Pattern is an RE2 regular expression matched against each line.
	Pattern string `json:"pattern,omitempty"`
	// Paths, instead of Pattern, makes the rule a destination rule
	// (destinations.go): absolute path.Match patterns of directories a
	// file step may not write into and files it may not write.
	Paths []string `json:"paths,omitempty"`
	// Action is ActionScan or ActionIntercept.
	Action      string `json:"action"`
	Description string `json:"description,omitempty"`
}

// Finding is one rule matching one line of a script.
type Finding struct {
	RuleID      string `json:"rule_id"`
	Action      string `json:"action"`
	Description string `json:"description,omitempty"`
	// Line is the 1-based number of the line; for a line continued with a
	// trailing backslash, the number of its first physical line.
	Line int `json:"line"`
	// Text is the offending line, trimmed, at most MaxTextLen characters.
	Text string `json:"text"`
}

// Engine checks scripts against a fixed set of compiled rules. It is safe
// for concurrent use.
type Engine struct {
	rules []compiled
	dests []compiled // destination rules
	// checked remembers the findings of scripts already checked, by a
	// digest of language and content: the rules never change, the same
	// script is sent again and again, and parsing it as the shell would
	// is most of what a submission costs the API.
	checked *lru.Cache[[sha256.Size]byte, []Finding]
}

// checkedScripts bounds the remembered scripts (a digest and the few
// findings of each).
const checkedScripts = 4096

type compiled struct {
	Rule
	re    *regexp.Regexp
	pre   prefilter
	langs map[string]bool // nil: every language
}

// New compiles rules into an Engine. It reports every bad rule (empty or
// duplicate id, unknown action or language, pattern that does not compile),
// each named by its id.
func New(rules []Rule) (*Engine, error) {
	e := &Engine{rules: make([]compiled, 0, len(rules))}
	e.checked, _ = lru.New[[sha256.Size]byte, []Finding](checkedScripts)
	seen := make(map[string]bool, len(rules))
	var errs []error
	for i, r := range rules {
		c, err := compile(r)
		switch {
		case err != nil && r.ID == "":
			errs = append(errs, fmt.Errorf("rule %d: %w", i, err))
		case err != nil:
			errs = append(errs, fmt.Errorf("rule %q: %w", r.ID, err))
		case seen[r.ID]:
			errs = append(errs, fmt.Errorf("rule %q: duplicate id", r.ID))
		case len(c.Paths) > 0:
			seen[r.ID] = true
			e.dests = append(e.dests, c)
		default:
			seen[r.ID] = true
			e.rules = append(e.rules, c)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return e, nil
}

func compile(r Rule) (compiled, error) {
	if !ruleID.MatchString(r.ID) {
		return compiled{}, fmt.Errorf("id %q: want letters, digits, '.', '_' or '-', at most 64", r.ID)
	}
	if r.Action != ActionScan && r.Action != ActionIntercept {
		return compiled{}, fmt.Errorf("action %q: want %q or %q", r.Action, ActionScan, ActionIntercept)
	}
	if len(r.Paths) > 0 {
		if err := compilePaths(r); err != nil {
			return compiled{}, err
		}
		c := compiled{Rule: r}
		c.Paths = append([]string(nil), r.Paths...)
		return c, nil
	}
	if r.Pattern == "" {
		return compiled{}, errors.New("empty pattern (or paths, for a destination rule)")
	}
	re, err := regexp.Compile(r.Pattern)
	if err != nil {
		return compiled{}, fmt.Errorf("pattern: %w", err)
	}
	c := compiled{Rule: r, re: re, pre: newPrefilter(r.Pattern)}
	c.Languages = append([]string(nil), r.Languages...)
	for _, l := range r.Languages {
		if _, ok := schemas.Interpreters[l]; !ok {
			return compiled{}, fmt.Errorf("unknown language %q (want bash, sh or python3)", l)
		}
		if c.langs == nil {
			c.langs = make(map[string]bool, len(r.Languages))
		}
		c.langs[l] = true
	}
	return c, nil
}

// Check matches content, a script for the interpreter language, against the
// rules for that language, and returns every finding in line order. An empty
// language means bash, as in schemas; an unknown one gets only the rules
// that name no language. When an intercept rule matched, err wraps
// ErrIntercepted (and schemas.ErrInvalid) and names the first such line;
// the findings are returned either way. A nil Engine finds nothing.
func (e *Engine) Check(language, content string) (findings []Finding, err error) {
	if e == nil {
		return nil, nil
	}
	if language == "" {
		language = "bash"
	}
	h := sha256.New()
	h.Write([]byte(language))
	h.Write([]byte{0})
	h.Write([]byte(content))
	var key [sha256.Size]byte
	h.Sum(key[:0])
	if f, ok := e.checked.Get(key); ok {
		return slices.Clone(f), refusal(f)
	}
	findings = e.check(language, content)
	e.checked.Add(key, slices.Clone(findings))
	return findings, refusal(findings)
}

// check is Check without the memory.
func (e *Engine) check(language, content string) (findings []Finding) {
	active := make([]*compiled, 0, len(e.rules))
	for i := range e.rules {
		if r := &e.rules[i]; r.langs == nil || r.langs[language] {
			active = append(active, r)
		}
	}
	if len(active) == 0 {
		return nil
	}
	type at struct {
		rule string
		line int
	}
	found := map[at]bool{}
	match := func(n int, text string) {
		for _, r := range active {
			if !found[at{r.ID, n}] && r.pre.mayMatch(text) && r.re.MatchString(text) {
				found[at{r.ID, n}] = true
				findings = append(findings, Finding{
					RuleID:      r.ID,
					Action:      r.Action,
					Description: r.Description,
					Line:        n,
					Text:        clip(text),
				})
			}
		}
	}
	logicalLines(content, match)
	if language == "bash" || language == "sh" {
		// the same rules on each command as it would run (shell.go)
		for _, c := range shellCommands(language, content) {
			match(c.line, c.text)
		}
	}
	return findings
}

// logicalLines calls fn with each line of content worth matching: lines
// ending in an odd number of backslashes are joined to the next (the
// backslash-newline dropped, as the shell and Python do), and blank lines
// and full-line '#' comments are left out. n is the 1-based number of the
// first physical line.
func logicalLines(content string, fn func(n int, line string)) {
	var parts []string
	n, first := 0, 0
	for raw := range strings.Lines(content) {
		n++
		line := strings.TrimSuffix(strings.TrimSuffix(raw, "\n"), "\r")
		if first == 0 {
			t := strings.TrimSpace(line)
			if t == "" || t[0] == '#' {
				continue
			}
			first = n
		}
		if trailingBackslashes(line)%2 == 1 {
			parts = append(parts, line[:len(line)-1])
			continue
		}
		parts = append(parts, line)
		fn(first, strings.Join(parts, ""))
		parts, first = parts[:0], 0
	}
	if first != 0 {
		fn(first, strings.Join(parts, ""))
	}
}

func trailingBackslashes(s string) int {
	return len(s) - len(strings.TrimRight(s, `\`))
}

// clip trims s, makes it valid UTF-8 and cuts it to MaxTextLen characters,
// the last one an ellipsis when something was cut.
func clip(s string) string {
	s = strings.TrimSpace(strings.ToValidUTF8(s, "\uFFFD"))
	if utf8.RuneCountInString(s) <= MaxTextLen {
		return s
	}
	n := 0
	for i := range s {
		if n == MaxTextLen-1 {
			return strings.TrimSpace(s[:i]) + "…"
		}
		n++
	}
	return s
}

// refusal returns the error for findings: nil unless an intercept rule
// matched.
func refusal(findings []Finding) error {
	var first *Finding
	more := 0
	for i := range findings {
		if findings[i].Action != ActionIntercept {
			continue
		}
		if first == nil {
			first = &findings[i]
		} else {
			more++
		}
	}
	if first == nil {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "script line %d matches high-risk rule %q", first.Line, first.RuleID)
	if first.Description != "" {
		fmt.Fprintf(&b, " (%s)", first.Description)
	}
	if more > 0 {
		fmt.Fprintf(&b, " and %d more intercept match", more)
		if more > 1 {
			b.WriteString("es")
		}
	}
	b.WriteString(": ")
	b.WriteString(ErrIntercepted.Error())
	return &interceptError{msg: b.String()}
}

// interceptError is what Check returns when it refuses a script.
type interceptError struct{ msg string }

func (e *interceptError) Error() string { return e.msg }

// Unwrap makes errors.Is true for ErrIntercepted and schemas.ErrInvalid.
func (e *interceptError) Unwrap() []error {
	return []error{ErrIntercepted, schemas.ErrInvalid}
}

// Load reads a rule file, a JSON object {"rules": [...]} described in the
// package comment. Unknown fields are an error, so a misspelt key is not
// silently ignored. Load does not compile the rules; New does.
func Load(path string) ([]Rule, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load risk rules: %w", err)
	}
	var f struct {
		Rules *[]Rule `json:"rules"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("load risk rules %s: %w", path, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("load risk rules %s: data after the top-level object", path)
	}
	if f.Rules == nil {
		return nil, fmt.Errorf("load risk rules %s: no \"rules\" list", path)
	}
	return *f.Rules, nil
}
