package schemas

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits every surface enforces before anything is queued.
const (
	MaxScriptBytes     = 512 << 10 // one script's content
	MaxHostsPerJob     = 20000     // target entries summed over steps
	MaxSteps           = 100
	MaxNameLen         = 256
	MaxArgs            = 256
	MaxEnv             = 256
	MaxTimeoutSeconds  = 86400
	DefaultTimeoutSecs = 7200
	DefaultAgentWait   = 30 // seconds a host may wait for its agent
	MaxAgentWait       = 3600
)

// Step types.
const (
	StepScript = "script"
)

// Interpreters an agent knows how to run.
var Interpreters = map[string]string{
	"bash":    "bash",
	"sh":      "sh",
	"python3": "python3",
}

var (
	envName     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	accountName = regexp.MustCompile(`^[a-z_][a-z0-9_.-]*\$?$`)
)

// JobSpec is what a client asks for: an ordered list of steps on hosts.
// It is the body of the submit command and is stored unchanged once the
// job exists.
type JobSpec struct {
	Name          string `json:"name"`
	Owner         string `json:"owner,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	Source        string `json:"source,omitempty"`
	// Surface names the API that accepted the job (native, octans, …).
	Surface string `json:"surface,omitempty"`
	Steps   []Step `json:"steps"`
	// Targets and Concurrency are defaults for steps that leave them out;
	// Normalize copies Targets into the steps and clears it.
	Targets     []Host `json:"targets,omitempty"`
	Concurrency int    `json:"concurrency,omitempty"`
	// AgentWait bounds, in seconds, how long a host waits for an online agent
	// before it ends as agent_offline.
	AgentWait int `json:"agent_wait,omitempty"`
	// Warnings are the high-risk rules of action "scan" that the scripts
	// matched when the job was accepted.
	Warnings []RiskFinding `json:"warnings,omitempty"`
	// Scope is the business (or business set) the job belongs to.
	Scope *Scope `json:"scope,omitempty"`
	// CallbackURL gets a POST when the job ends (BlueKing's callback_url).
	CallbackURL string `json:"callback_url,omitempty"`
	// Extra carries a compatibility surface's own fields, opaque to the engine.
	Extra map[string]string `json:"extra,omitempty"`
}

// Scope is BlueKing's bk_scope_type ("biz" or "biz_set") and bk_scope_id.
type Scope struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// RiskFinding is a script line that matched a high-risk command rule.
type RiskFinding struct {
	Step        int    `json:"step"`
	RuleID      string `json:"rule_id"`
	Action      string `json:"action"`
	Description string `json:"description,omitempty"`
	Line        int    `json:"line"`
	Text        string `json:"text"`
}

// Step is one stage of a job.
type Step struct {
	Name    string    `json:"name,omitempty"`
	Type    string    `json:"type"`
	Script  *Script   `json:"script,omitempty"`
	File    *FileSpec `json:"file,omitempty"`
	Targets []Host    `json:"targets,omitempty"`
	// Timeout is in seconds; 0 means DefaultTimeoutSecs.
	Timeout int `json:"timeout,omitempty"`
	// Concurrency caps hosts running at once; 0 means all at once.
	Concurrency int `json:"concurrency,omitempty"`
	// OnFailure says what a step whose hosts did not all succeed does:
	// "stop" (the default) ends the job, "continue" marks the step
	// error-ignored and goes on with the next.
	OnFailure string `json:"on_failure,omitempty"`
	// Rolling runs the hosts in batches.
	Rolling *Rolling `json:"rolling,omitempty"`
	// MaxFailPercent, when above 0, ends the step as failed (its remaining
	// hosts skipped) once more than that share of its hosts has failed.
	MaxFailPercent int `json:"max_fail_percent,omitempty"`
}

// Step failure modes.
const (
	OnFailureStop     = "stop"
	OnFailureContinue = "continue"
)

// Script is the body of a script step.
type Script struct {
	Content     string            `json:"content"`
	Interpreter string            `json:"interpreter,omitempty"`
	Args        []string          `json:"args,omitempty"`
	Env         map[string]string `json:"env,omitempty"`
	// User is the account alias the client named; the API resolves it
	// through the job's scope's aliases and stores the OS user here, so
	// agents run the script as User (empty: as the agent itself, which
	// only jobs that did not pass the API can have).
	User string `json:"user,omitempty"`
	// UserAlias is the alias the client named (DefaultAccountAlias when it
	// named none), kept for display; the API sets it.
	UserAlias string `json:"user_alias,omitempty"`
	// Sensitive hides Args and Env values in API answers and event data
	// (BlueKing's is_param_sensitive). At submit the API seals them to the
	// target hosts' agents (Sealed) and leaves Masked in their place.
	Sensitive bool `json:"sensitive,omitempty"`
	// Sealed holds the sensitive values, sealed; only the API sets it.
	Sealed *Sealed `json:"sealed,omitempty"`
}

// InlineResults reports whether a job's final host results live in its
// state record rather than one key each: script-only jobs of at most
// MaxInlineResults targets in all. It saves a write and a round trip per
// commit for the small jobs most submissions are.
func (s *JobSpec) InlineResults() bool {
	for _, st := range s.Steps {
		if st.File != nil {
			return false
		}
	}
	return s.Units() <= MaxInlineResults
}

// InlineLogLimit is the most bytes of a step's task output that may ride
// in its finished report and stay in its stored result (Task.InlineLog),
// 0 when none may: MaxInlineLog for a small job (its results live in its
// state), MaxSegmentInlineLog for a larger job's script step (its results
// live in segments), none for a file step's transfers.
func (s *JobSpec) InlineLogLimit(step int) int {
	switch {
	case step < 0 || step >= len(s.Steps) || s.Steps[step].File != nil:
		return 0
	case s.InlineResults():
		return MaxInlineLog
	}
	return MaxSegmentInlineLog
}

// Units counts the job's target hosts over all its steps (a host in two
// steps counts twice: each is a unit of work).
func (s *JobSpec) Units() int {
	n := 0
	for _, st := range s.Steps {
		n += len(st.Targets)
	}
	return n
}

// MaxInlineResults bounds the targets of a job whose results are inlined.
const MaxInlineResults = 16

// Normalize fills defaults and validates, so a stored spec is complete.
// It returns FieldErrors (wrapping ErrInvalid) naming every bad field.
func (s *JobSpec) Normalize() error {
	var fe FieldErrors
	s.Name = strings.TrimSpace(s.Name)
	if s.Name == "" {
		s.Name = "job"
	}
	if utf8.RuneCountInString(s.Name) > MaxNameLen {
		fe.Add("name", "longer than %d characters", MaxNameLen)
	}
	if s.Concurrency < 0 {
		fe.Add("concurrency", "must not be negative")
	}
	switch {
	case s.AgentWait < 0:
		fe.Add("agent_wait", "must not be negative")
	case s.AgentWait == 0:
		s.AgentWait = DefaultAgentWait
	case s.AgentWait > MaxAgentWait:
		fe.Add("agent_wait", "at most %d seconds", MaxAgentWait)
	}
	for i := range s.Targets {
		s.Targets[i].validate(fmt.Sprintf("targets[%d]", i), &fe)
	}
	switch {
	case len(s.Steps) == 0:
		fe.Add("steps", "at least one step is required")
	case len(s.Steps) > MaxSteps:
		fe.Add("steps", "at most %d steps", MaxSteps)
	}
	total := 0
	for i := range s.Steps {
		st := &s.Steps[i]
		p := fmt.Sprintf("steps[%d]", i)
		if len(st.Targets) == 0 {
			st.Targets = append([]Host(nil), s.Targets...)
		} else {
			for j := range st.Targets {
				st.Targets[j].validate(fmt.Sprintf("%s.targets[%d]", p, j), &fe)
			}
		}
		st.Targets = dedupeHosts(st.Targets)
		if len(st.Targets) == 0 {
			fe.Add(p+".targets", "no target hosts")
		}
		total += len(st.Targets)
		if st.Concurrency == 0 {
			st.Concurrency = s.Concurrency
		}
		if st.Concurrency < 0 {
			fe.Add(p+".concurrency", "must not be negative")
		}
		switch {
		case st.Timeout < 0:
			fe.Add(p+".timeout", "must not be negative")
		case st.Timeout == 0:
			st.Timeout = DefaultTimeoutSecs
		case st.Timeout > MaxTimeoutSeconds:
			fe.Add(p+".timeout", "at most %d seconds", MaxTimeoutSeconds)
		}
		if utf8.RuneCountInString(st.Name) > MaxNameLen {
			fe.Add(p+".name", "longer than %d characters", MaxNameLen)
		}
		switch st.OnFailure {
		case "":
			st.OnFailure = OnFailureStop
		case OnFailureStop, OnFailureContinue:
		default:
			fe.Add(p+".on_failure", "want %q or %q", OnFailureStop, OnFailureContinue)
		}
		if st.Rolling != nil {
			st.Rolling.validate(p+".rolling", &fe)
			if _, perr := parseRolling(st.Rolling.Expr); perr != nil {
				// reported by validate
			} else if _, err := RollingBatches(st.Rolling.Expr, len(st.Targets)); err != nil && len(st.Targets) > 0 {
				fe.Add(p+".rolling.expr", "%v", err)
			}
		}
		if st.MaxFailPercent < 0 || st.MaxFailPercent > 100 {
			fe.Add(p+".max_fail_percent", "want 0 to 100")
		}
		st.validateBody(p, &fe)
	}
	// Steps now carry their targets; the stored spec need not repeat them.
	s.Targets = nil
	if s.CallbackURL != "" {
		if u, err := url.Parse(s.CallbackURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			fe.Add("callback_url", "%q is not an http(s) URL", s.CallbackURL)
		}
	}
	if s.Scope != nil && s.Scope.Type != "biz" && s.Scope.Type != "biz_set" {
		fe.Add("scope.type", "want biz or biz_set")
	}
	if total > MaxHostsPerJob {
		fe.Add("targets", "%d target hosts over all steps; at most %d", total, MaxHostsPerJob)
	}
	return fe.Err()
}

// validateBody checks that a step has the body its type says, filling the
// type in from the body when it is left out.
func (st *Step) validateBody(p string, fe *FieldErrors) {
	switch {
	case st.Script != nil && st.File != nil:
		fe.Add(p, "a step has either script or file, not both")
		return
	case st.Type == "" && st.Script != nil:
		st.Type = StepScript
	case st.Type == "" && st.File != nil:
		st.Type = StepFile
	case st.Type == "":
		fe.Add(p, "a step needs script or file")
		return
	}
	switch st.Type {
	case StepScript:
		if st.Script == nil {
			st.missingBody(p, StepScript, st.File != nil, StepFile, fe)
			return
		}
		st.Script.validate(p+".script", fe)
	case StepFile:
		if st.File == nil {
			st.missingBody(p, StepFile, st.Script != nil, StepScript, fe)
			return
		}
		st.File.validate(p+".file", fe)
	default:
		fe.Add(p+".type", "unknown step type %q (want %q or %q)", st.Type, StepScript, StepFile)
	}
}

// missingBody reports a step whose type names a body it lacks; hasOther
// is whether it has the other body instead.
func (st *Step) missingBody(p, want string, hasOther bool, other string, fe *FieldErrors) {
	if hasOther {
		fe.Add(p+".type", "is %q, but the step has %s: leave type out, or make it %q", want, other, other)
		return
	}
	fe.Add(p+"."+want, "required when type is %q", want)
}

func (sc *Script) validate(p string, fe *FieldErrors) {
	if strings.TrimSpace(sc.Content) == "" {
		fe.Add(p+".content", "empty script")
	}
	if len(sc.Content) > MaxScriptBytes {
		fe.Add(p+".content", "%d bytes; at most %d", len(sc.Content), MaxScriptBytes)
	}
	if sc.Interpreter == "" {
		sc.Interpreter = "bash"
	}
	if _, ok := Interpreters[sc.Interpreter]; !ok {
		fe.Add(p+".interpreter", "unknown interpreter %q (want bash, sh or python3)", sc.Interpreter)
	}
	if len(sc.Args) > MaxArgs {
		fe.Add(p+".args", "at most %d arguments", MaxArgs)
	}
	if len(sc.Env) > MaxEnv {
		fe.Add(p+".env", "at most %d variables", MaxEnv)
	}
	for k := range sc.Env {
		if !envName.MatchString(k) {
			fe.Add(p+".env", "%q is not a valid environment variable name", k)
		}
	}
	if sc.User != "" && !accountName.MatchString(sc.User) {
		fe.Add(p+".user", "%q is not a valid account name", sc.User)
	}
}

func dedupeHosts(hs []Host) []Host {
	seen := make(map[Host]struct{}, len(hs))
	out := hs[:0]
	for _, h := range hs {
		if _, ok := seen[h]; ok {
			continue
		}
		seen[h] = struct{}{}
		out = append(out, h)
	}
	return out
}

// StepTimeout returns a step's timeout as a duration.
func (st Step) StepTimeout() time.Duration { return time.Duration(st.Timeout) * time.Second }
