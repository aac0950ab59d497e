package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
)

// Every object has a scope: a job the one it was submitted in, an agent
// the one of its enrolment. The rule is the same on every surface: a
// caller sees only objects within its scopes (others are not found), and
// a job targets only hosts whose agents are enrolled in its scope.

// EnrolmentReader reads agents' enrolments (bucket schemas.BucketEnrolled).
type EnrolmentReader interface {
	// Enrolment is one agent's.
	Enrolment(ctx context.Context, agent string) (schemas.Enrolment, bool, error)
	// Enrolled returns, for each of hosts that has any, the enrolments
	// that allow it (revoked ones left out).
	Enrolled(ctx context.Context, hosts map[schemas.Host]bool) (map[schemas.Host][]schemas.Enrolment, error)
}

// KVEnrolments reads enrolments from their bucket.
type KVEnrolments struct{ KV jetstream.KeyValue }

// Enrolment implements EnrolmentReader.
func (k KVEnrolments) Enrolment(ctx context.Context, agent string) (schemas.Enrolment, bool, error) {
	e, err := k.KV.Get(ctx, agent)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return schemas.Enrolment{}, false, nil
	}
	if err != nil {
		return schemas.Enrolment{}, false, schemas.Unavailable(err, "read enrolment")
	}
	var en schemas.Enrolment
	if err := json.Unmarshal(e.Value(), &en); err != nil {
		return schemas.Enrolment{}, false, fmt.Errorf("enrolment %s: %w", agent, err)
	}
	return en, true, nil
}

// submitter checks that the caller may submit spec and settles its scope
// and owner: the caller's only scope, or the one it names and holds. A
// caller with several scopes must name one; admins may submit with none.
func (c *Core) submitter(ctx context.Context, spec *schemas.JobSpec) (*Principal, error) {
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return nil, fmt.Errorf("no authenticated caller: %w", ErrUnauthorized)
	}
	if !p.May(RoleOperator) {
		return nil, Forbidden("a %s may not run jobs", p.Role)
	}
	switch {
	case spec.Scope != nil && !p.Holds(spec.Scope):
		return nil, Forbidden("you hold no scope %s", spec.Scope)
	case spec.Scope == nil && !p.Admin() && len(p.Scopes) == 1:
		sc := p.Scopes[0]
		spec.Scope = &sc
	case spec.Scope == nil && !p.Admin():
		if len(p.Scopes) == 0 {
			return nil, Forbidden("you hold no scope to run jobs in")
		}
		return nil, schemas.Invalid("scope", "you hold several scopes (%s): name one", joinScopes(p.Scopes))
	}
	spec.Owner = p.Actor
	return p, nil
}

func joinScopes(scs []schemas.Scope) string {
	out := ""
	for i, s := range ScopeStrings(scs) {
		if i > 0 {
			out += ", "
		}
		out += s
	}
	return out
}

// jobHosts lists every host a job touches (targets and file sources), once.
func jobHosts(spec *schemas.JobSpec) []schemas.Host {
	var out []schemas.Host
	add := func(h schemas.Host) {
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	for _, st := range spec.Steps {
		for _, h := range st.Targets {
			add(h)
		}
		if st.File != nil {
			for _, src := range st.File.Sources {
				for _, h := range src.Hosts {
					add(h)
				}
			}
		}
	}
	return out
}

// checkTargets refuses a job of a scope that touches a host no agent
// enrolled in that scope serves (host → agents via the registry, then
// their enrolments). Admins may target any host, with or without a scope
// (they hold every scope; BlueKing requests always name one, and the
// admin token's app must keep reaching unenrolled hosts as before).
func (c *Core) checkTargets(ctx context.Context, p *Principal, spec *schemas.JobSpec) error {
	if spec.Scope == nil || p.Admin() {
		return nil
	}
	byHost := map[schemas.Host][]string{}
	if c.deps.Agents != nil {
		for _, a := range c.deps.Agents.All() {
			byHost[a.Host()] = append(byHost[a.Host()], a.ID)
		}
	}
	var fe schemas.FieldErrors
	for _, h := range jobHosts(spec) {
		ok, err := c.hostInScope(ctx, h, byHost[h], *spec.Scope)
		if err != nil {
			return err
		}
		if !ok {
			fe.Add("targets", "host %s is not in scope %s", h, spec.Scope)
		}
	}
	return fe.Err()
}

// hostInScope reports whether one of agents, enrolled in sc, may serve h.
func (c *Core) hostInScope(ctx context.Context, h schemas.Host, agents []string, sc schemas.Scope) (bool, error) {
	if c.deps.Enrolments == nil {
		return false, nil
	}
	for _, id := range agents {
		en, found, err := c.deps.Enrolments.Enrolment(ctx, id)
		if err != nil {
			return false, err
		}
		if found && en.Scope == sc && en.Allows(h) {
			return true, nil
		}
	}
	return false, nil
}

// VisibleAgents lists the registered agents the caller may see: admins
// all, others those enrolled in one of their scopes.
func (c *Core) VisibleAgents(ctx context.Context) ([]schemas.AgentInfo, error) {
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return nil, fmt.Errorf("no authenticated caller: %w", ErrUnauthorized)
	}
	all := c.deps.Agents.All()
	if p.Admin() {
		return all, nil
	}
	out := all[:0:0]
	for _, a := range all {
		if c.deps.Enrolments == nil {
			break
		}
		en, found, err := c.deps.Enrolments.Enrolment(ctx, a.ID)
		if err != nil {
			return nil, err
		}
		if found && en.Revoked == nil && p.Holds(&en.Scope) {
			out = append(out, a)
		}
	}
	return out, nil
}

// actorOr is the acting identity of ctx, or def without one.
func actorOr(ctx context.Context, def string) string {
	if p, ok := PrincipalFrom(ctx); ok {
		return p.Actor
	}
	return def
}

// visible loads a job's spec and says whether the caller may see it; a
// job it may not see is not found.
func visible(ctx context.Context, jobs JobReader, id int64) (*schemas.JobSpec, *schemas.JobState, error) {
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return nil, nil, fmt.Errorf("no authenticated caller: %w", ErrUnauthorized)
	}
	spec, st, err := jobs.Load(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if !p.Holds(spec.Scope) {
		return nil, nil, schemas.NotFound("job %d not found", id)
	}
	return spec, st, nil
}

// isAdmin reports whether ctx's caller is an admin (who sees everything,
// so the readers skip their checks).
func isAdmin(ctx context.Context) bool {
	p, ok := PrincipalFrom(ctx)
	return ok && p.Admin()
}

// scopedJobs is JobReader answering only jobs the caller may see.
type scopedJobs struct{ JobReader }

func (r scopedJobs) check(ctx context.Context, id int64) error {
	if isAdmin(ctx) {
		return nil
	}
	_, _, err := visible(ctx, r.JobReader, id)
	return err
}

func (r scopedJobs) Job(ctx context.Context, id int64) (schemas.JobSummary, error) {
	if err := r.check(ctx, id); err != nil {
		return schemas.JobSummary{}, err
	}
	return r.JobReader.Job(ctx, id)
}

func (r scopedJobs) Load(ctx context.Context, id int64) (*schemas.JobSpec, *schemas.JobState, error) {
	if isAdmin(ctx) {
		return r.JobReader.Load(ctx, id)
	}
	return visible(ctx, r.JobReader, id)
}

func (r scopedJobs) Hosts(ctx context.Context, id int64) ([]schemas.HostRow, error) {
	if err := r.check(ctx, id); err != nil {
		return nil, err
	}
	return r.JobReader.Hosts(ctx, id)
}

func (r scopedJobs) Results(ctx context.Context, id int64, step int, phase string, idx []int) (map[int]schemas.HostResult, error) {
	if err := r.check(ctx, id); err != nil {
		return nil, err
	}
	return r.JobReader.Results(ctx, id, step, phase, idx)
}

func (r scopedJobs) UploadResults(ctx context.Context, id int64, step, units int) (map[int]schemas.HostResult, error) {
	if err := r.check(ctx, id); err != nil {
		return nil, err
	}
	return r.JobReader.UploadResults(ctx, id, step, units)
}

// scopedSearch is JobSearch answering only jobs the caller may see.
type scopedSearch struct{ JobSearch }

// List answers admins from the whole index, others from the index of
// their scopes (jobs of no scope are an admin's).
func (s scopedSearch) List(ctx context.Context, q JobQuery) ([]schemas.JobSummary, int, error) {
	if isAdmin(ctx) {
		return s.JobSearch.List(ctx, q)
	}
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return nil, 0, fmt.Errorf("no authenticated caller: %w", ErrUnauthorized)
	}
	if len(p.Scopes) == 0 {
		return []schemas.JobSummary{}, 0, nil
	}
	q.Scopes = make([]string, len(p.Scopes))
	for i, sc := range p.Scopes {
		q.Scopes[i] = sc.String()
	}
	return s.JobSearch.List(ctx, q)
}

// JobsBefore leaves out the jobs the caller may not see.
func (s scopedSearch) JobsBefore(ctx context.Context, below int64, n int) ([]schemas.JobSummary, int64, error) {
	sums, next, err := s.JobSearch.JobsBefore(ctx, below, n)
	if err != nil || isAdmin(ctx) {
		return sums, next, err
	}
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return nil, 0, fmt.Errorf("no authenticated caller: %w", ErrUnauthorized)
	}
	ids := make([]int64, 0, len(sums))
	for _, sum := range sums {
		ids = append(ids, sum.ID)
	}
	facts, err := s.Facts(ctx, ids)
	if err != nil {
		return nil, 0, err
	}
	out := sums[:0]
	for _, sum := range sums {
		if f, ok := facts[sum.ID]; ok && p.Holds(f.Scope) {
			out = append(out, sum)
		}
	}
	return out, next, nil
}

// scopedLogs is LogReader answering only logs of jobs the caller may see.
type scopedLogs struct {
	LogReader
	jobs JobReader
}

func (l scopedLogs) Read(ctx context.Context, ref schemas.LogRef, from, limit int) (schemas.LogPage, error) {
	if !isAdmin(ctx) {
		if _, _, err := visible(ctx, l.jobs, ref.Job); err != nil {
			return schemas.LogPage{}, err
		}
	}
	return l.LogReader.Read(ctx, ref, from, limit)
}

// scopedCallbacks is CallbackReader for jobs the caller may see.
type scopedCallbacks struct {
	CallbackReader
	jobs JobReader
}

func (r scopedCallbacks) Callback(ctx context.Context, id int64) (schemas.CallbackRecord, bool, error) {
	if !isAdmin(ctx) {
		if _, _, err := visible(ctx, r.jobs, id); err != nil {
			return schemas.CallbackRecord{}, false, err
		}
	}
	return r.CallbackReader.Callback(ctx, id)
}

// adminDeadLetters lets only admins read dead letters: they are messages
// of every scope.
type adminDeadLetters struct{ DeadLetterReader }

func (r adminDeadLetters) DeadLetters(ctx context.Context) ([]schemas.DeadLetter, error) {
	if err := Require(ctx, RoleAdmin, nil, false); err != nil {
		return nil, err
	}
	return r.DeadLetterReader.DeadLetters(ctx)
}
