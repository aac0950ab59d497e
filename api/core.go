package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/api/riskrules"
	"github.com/fleetjob/fleetjob/internal/jobstate"
	"github.com/fleetjob/fleetjob/schemas"
)

// Deps are the core's collaborators.
type Deps struct {
	Publisher   Publisher
	Claims      Claims
	Jobs        JobReader
	Search      JobSearch
	Logs        LogReader
	Callbacks   CallbackReader
	DeadLetters DeadLetterReader
	Agents      AgentLister
	// Accounts holds the execution account aliases; nil resolves only the
	// default global alias root → root.
	Accounts AccountStore
	// Queued caches accepted jobs; nil caches nothing (reads then wait for
	// a worker to take the job).
	Queued JobQueuer
	// Risk checks scripts against the high-risk command rules; nil checks
	// nothing.
	Risk *riskrules.Engine
	// Enrol enrols and revokes agents; nil serves no enrolment.
	Enrol    *Enroller
	Registry prometheus.Registerer
	Log      *slog.Logger
	// Auth configures authentication; NewCore's token is its admin token.
	Auth Auth
	// Enrolments read agents' enrolments: their scopes, and the agents
	// enrolled for each host. Sensitive values are sealed with SealKey to
	// those agents (seal.go); without both a job with sensitive values is
	// refused, and only jobs of no scope (admins') may target hosts.
	Enrolments EnrolmentReader
	SealKey    nkeys.KeyPair
	// Audit records every write; nil records nothing.
	Audit Auditor
}

// Core is the command core every surface shares: it submits, stops and
// operates jobs (one JetStream command each, after the checks every
// surface needs) and hands the surfaces the readers they answer from.
//
// Its readers (Jobs, Search, Logs, Callbacks, DeadLetters) answer only what
// the request's principal may see: a job outside the caller's scopes is
// not found, whichever surface asks.
type Core struct {
	Jobs        JobReader
	Search      JobSearch
	Logs        LogReader
	Callbacks   CallbackReader
	DeadLetters DeadLetterReader
	Agents      AgentLister
	// Enrol enrols and revokes agents (nil: not served).
	Enrol *Enroller
	Log   *slog.Logger

	deps      Deps
	auth      Auth
	limits    *limiter
	submitted *prometheus.CounterVec
	limited   *prometheus.CounterVec
}

// NewCore builds the core. token is the admin credential (compared by
// Admin); its metrics register on deps.Registry.
func NewCore(token string, deps Deps) *Core {
	deps.Auth.Token = token
	c := &Core{
		Agents: deps.Agents, Enrol: deps.Enrol, Log: deps.Log.With("component", "api"),
		deps: deps, auth: deps.Auth, limits: newLimiter(deps.Auth.Rate, deps.Auth.Burst),
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetjob_api_jobs_submitted_total",
			Help: "Jobs accepted by the API, by surface."}, []string{"surface"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetjob_api_rate_limited_total",
			Help: "Requests refused by a credential's rate limit, by surface."}, []string{"surface"}),
	}
	c.Jobs, c.Search, c.Logs = scopedJobs{deps.Jobs}, scopedSearch{deps.Search}, scopedLogs{deps.Logs, deps.Jobs}
	c.Callbacks, c.DeadLetters = scopedCallbacks{deps.Callbacks, deps.Jobs}, adminDeadLetters{deps.DeadLetters}
	deps.Registry.MustRegister(c.submitted, c.limited)
	return c
}

// Claim is how a submission is made unique: a key in the names bucket and
// the JetStream message id that goes with it. A zero Claim is no claim.
// Claims live in a namespace of their caller's (an idempotency key) or of
// the job's scope (a task name), fixed once the submitter is known (see
// within): one tenant can neither see nor take another's keys and names.
type Claim struct {
	key   string
	msgID string
	// kind ("idem" or a surface) and raw (the key or name) make key and
	// msgID once the namespace is known; perScope says which namespace.
	kind, raw string
	perScope  bool
	// fingerprint identifies the request that takes an idempotency key; a
	// repeat with another fingerprint is refused (ErrKeyReused).
	fingerprint string
	// strict refuses any repeat instead of answering with the first job.
	strict bool
}

// IdempotencyClaim is the claim of an Idempotency-Key: a repeat of the
// same request answers the first job; another request with the same key
// is refused. fingerprint identifies the request (see Fingerprint).
func IdempotencyClaim(key, fingerprint string) Claim {
	if key == "" {
		return Claim{}
	}
	return Claim{kind: "idem", raw: key, fingerprint: fingerprint}.in("")
}

// NameClaim claims a task name of a surface for good: a second submission
// with it is refused with ErrConflict.
func NameClaim(surface, name string) Claim {
	return Claim{kind: surface, raw: name, strict: true, perScope: true}.in("")
}

// in places the claim in namespace ns ("" is the admins' and unscoped
// jobs', which keeps the keys claims had before namespaces).
func (cl Claim) in(ns string) Claim {
	if cl.raw == "" {
		return cl
	}
	cl.key, cl.msgID = cl.kind+"."+hashKey(cl.raw), cl.kind+":"+cl.raw
	if ns != "" {
		cl.key, cl.msgID = cl.kind+"."+hashKey(ns+"\x00"+cl.raw), cl.kind+":"+ns+":"+cl.raw
	}
	return cl
}

// within is the claim in its namespace for a submission by p of spec:
// the job's scope for a name, the caller for an idempotency key.
func (cl Claim) within(p *Principal, spec *schemas.JobSpec) Claim {
	switch {
	case cl.perScope && spec.Scope != nil:
		return cl.in(spec.Scope.String())
	case cl.perScope, p.Admin():
		return cl.in("")
	}
	return cl.in(string(p.Kind) + ":" + p.Actor)
}

// Fingerprint identifies a request by its decoded content, so the same
// request sent with other whitespace or key order is the same request.
func Fingerprint(v any) string {
	b, _ := json.Marshal(v)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func hashKey(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:16])
}

// ErrKeyReused refuses an idempotency key sent again with another request
// (HTTP 422 on the native API, as the IETF Idempotency-Key draft says).
var ErrKeyReused = errors.New("the Idempotency-Key was already used with a different request")

// claimWait bounds how long a deduplicated submission waits for the first
// one to record its claim.
const claimWait = 2 * time.Second

// Submit validates a spec, checks it against the high-risk rules and
// publishes it as one submit command. With a claim, a repeat answers the
// first job's id (dup true), or ErrConflict when the claim is strict.
func (c *Core) Submit(ctx context.Context, spec *schemas.JobSpec, cl Claim) (id int64, dup bool, err error) {
	p, err := c.submitter(ctx, spec)
	if err != nil {
		return 0, false, err
	}
	if err := spec.Normalize(); err != nil {
		return 0, false, err
	}
	if err := c.resolveAccounts(spec); err != nil {
		return 0, false, err
	}
	if err := c.checkRisk(spec); err != nil {
		return 0, false, err
	}
	if err := c.checkTargets(ctx, p, spec); err != nil {
		return 0, false, err
	}
	if err := c.seal(ctx, spec); err != nil {
		return 0, false, err
	}
	cl = cl.within(p, spec)
	if names, ok := c.deps.Claims.(nameIndex); ok && cl.strict {
		return c.submitNamed(ctx, p, spec, cl, names)
	}
	if cl.key != "" {
		h, found, err := c.deps.Claims.Lookup(ctx, cl.key)
		if err != nil {
			return 0, false, err
		}
		if found {
			return h.ID, true, cl.repeat(h)
		}
	}
	body, _ := json.Marshal(schemas.SubmitCommand{V: schemas.MessageVersion, Spec: *spec, SubmittedAt: time.Now().UTC()})
	seq, dup, err := c.deps.Publisher.Publish(ctx, schemas.SubjSubmit, body, cl.msgID)
	if err != nil {
		return 0, false, fmt.Errorf("submit: %w", err)
	}
	id = int64(seq)
	if cl.key != "" {
		if dup {
			// The first submission records the claim right after its
			// publish ack: its fingerprint, not this one's, holds the key.
			if h, ok := c.awaitClaim(ctx, cl.key); ok {
				return h.ID, true, cl.repeat(h)
			}
		}
		h, err := c.deps.Claims.Claim(ctx, cl.key, id, cl.fingerprint)
		if err != nil {
			c.Log.Warn("claim not recorded", "key", cl.key, "job", id, "err", err)
		} else if h.ID != id || dup {
			return h.ID, true, cl.repeat(h)
		}
	}
	if !dup {
		c.accepted(ctx, p, spec, id)
	}
	return id, dup, nil
}

// submitNamed submits a job that takes a task name, in one round trip:
// the name is looked up in memory, the publish (with the name as its
// message id) catches a name taken within the duplicate window, and the
// claim is recorded after the answer (see WatchedNames).
func (c *Core) submitNamed(ctx context.Context, p *Principal, spec *schemas.JobSpec, cl Claim, names nameIndex) (int64, bool, error) {
	if h, ok := names.Held(cl.key); ok {
		return h.ID, true, cl.repeat(h)
	}
	body, _ := json.Marshal(schemas.SubmitCommand{V: schemas.MessageVersion, Spec: *spec, SubmittedAt: time.Now().UTC()})
	seq, dup, err := c.deps.Publisher.Publish(ctx, schemas.SubjSubmit, body, cl.msgID)
	if err != nil {
		return 0, false, fmt.Errorf("submit: %w", err)
	}
	id := int64(seq)
	if dup { // the first job with this name, within the window
		return id, true, cl.repeat(ClaimHolder{ID: id})
	}
	names.Record(cl.key, id)
	c.accepted(ctx, p, spec, id)
	return id, false, nil
}

// accepted is what follows a new job's publish: its audit event, its
// count, its first cache entry.
func (c *Core) accepted(ctx context.Context, p *Principal, spec *schemas.JobSpec, id int64) {
	c.audit(ctx, p, AuditSubmit, strconv.FormatInt(id, 10), spec.Scope, nil)
	c.submitted.WithLabelValues(spec.Surface).Inc()
	if c.deps.Queued != nil {
		c.deps.Queued.Queued(ctx, spec, schemas.NewJobState(id, spec, time.Now().UTC()))
	}
}

// repeat is the answer to a submission whose claim h already holds.
func (cl Claim) repeat(h ClaimHolder) error {
	switch {
	case cl.strict:
		return schemas.Conflict("the name is already taken by job %d", h.ID)
	case h.Fingerprint != "" && cl.fingerprint != "" && h.Fingerprint != cl.fingerprint:
		return fmt.Errorf("job %d holds the key: %w", h.ID, ErrKeyReused)
	}
	return nil
}

// awaitClaim waits briefly for a claim another submission is recording.
func (c *Core) awaitClaim(ctx context.Context, key string) (ClaimHolder, bool) {
	deadline := time.Now().Add(claimWait)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		h, found, err := c.deps.Claims.Lookup(ctx, key)
		if found && err == nil {
			return h, true
		}
		if time.Now().After(deadline) {
			return ClaimHolder{}, false
		}
		select {
		case <-ctx.Done():
			return ClaimHolder{}, false
		case <-time.After(wait):
		}
	}
}

// Resolve returns the job that holds a name claim for the caller: in the
// unscoped namespace for an admin, in each of the caller's scopes for
// anyone else. Another scope's names are not found.
func (c *Core) Resolve(ctx context.Context, cl Claim) (int64, bool, error) {
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return 0, false, fmt.Errorf("no authenticated caller: %w", ErrUnauthorized)
	}
	spaces := []Claim{cl.in("")}
	if !p.Admin() {
		spaces = spaces[:0]
		for _, sc := range p.Scopes {
			spaces = append(spaces, cl.within(p, &schemas.JobSpec{Scope: &sc}))
		}
	}
	names, indexed := c.deps.Claims.(nameIndex)
	for _, s := range spaces {
		if indexed && s.strict {
			if h, ok := names.Held(s.key); ok { // recorded here, maybe not yet in the bucket
				return h.ID, true, nil
			}
		}
		h, found, err := c.deps.Claims.Lookup(ctx, s.key)
		if err != nil || found {
			return h.ID, found, err
		}
	}
	return 0, false, nil
}

// checkRisk runs every script step through the high-risk command rules
// and every file step's destination through the destination rules: an
// intercept refuses the job, scan findings are recorded on it.
func (c *Core) checkRisk(spec *schemas.JobSpec) error {
	spec.Warnings = nil
	if c.deps.Risk == nil {
		return nil
	}
	for i, st := range spec.Steps {
		var findings []riskrules.Finding
		var err error
		switch {
		case st.Script != nil:
			findings, err = c.deps.Risk.Check(st.Script.Interpreter, st.Script.Content)
		case st.File != nil: // protected destinations
			findings, err = c.deps.Risk.CheckFile(st.File)
		}
		if err != nil {
			return fmt.Errorf("steps[%d]: %w", i, err)
		}
		for _, f := range findings {
			spec.Warnings = append(spec.Warnings, schemas.RiskFinding{Step: i, RuleID: f.RuleID, Action: f.Action,
				Description: f.Description, Line: f.Line, Text: f.Text})
		}
	}
	return nil
}

// ErrFinished refuses to stop a job that has already ended; it is a
// conflict.
var ErrFinished = schemas.Conflict("the job has already finished")

// Stop publishes a stop command for a job that exists and has not ended.
func (c *Core) Stop(ctx context.Context, id int64, by string) error {
	spec, _, err := c.Jobs.Load(ctx, id)
	if err != nil {
		return err
	}
	if err := Require(ctx, RoleOperator, spec.Scope, true); err != nil {
		return err
	}
	by = actorOr(ctx, by)
	sum, err := c.Jobs.Job(ctx, id)
	if err != nil {
		return err
	}
	if schemas.JobFinal(sum.Status) {
		return fmt.Errorf("job %d is %s: %w", id, sum.Status, ErrFinished)
	}
	body, _ := json.Marshal(schemas.StopCommand{V: schemas.MessageVersion, JobID: id, By: by})
	if _, _, err := c.deps.Publisher.Publish(ctx, schemas.SubjStop, body, ""); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	c.audit(ctx, nil, AuditStop, strconv.FormatInt(id, 10), spec.Scope, nil)
	return nil
}

// Operate checks an operation on a step (0-based) against the job's
// current state and publishes it; the worker checks again when it applies it.
func (c *Core) Operate(ctx context.Context, id int64, step int, op, by string) error {
	spec, st, err := c.Jobs.Load(ctx, id)
	if err != nil {
		return err
	}
	if err := Require(ctx, RoleOperator, spec.Scope, true); err != nil {
		return err
	}
	by = actorOr(ctx, by)
	if err := jobstate.CheckOp(st, op, step); err != nil {
		return err
	}
	body, _ := json.Marshal(schemas.OpCommand{V: schemas.MessageVersion, JobID: id, Step: step, Op: op, By: by})
	if _, _, err := c.deps.Publisher.Publish(ctx, schemas.SubjOp, body, ""); err != nil {
		return fmt.Errorf("operate: %w", err)
	}
	c.audit(ctx, nil, AuditOperate, strconv.FormatInt(id, 10), spec.Scope, map[string]any{"step": step, "op": op})
	return nil
}
