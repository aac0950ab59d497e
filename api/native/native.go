// Package native is fleetjob's own API, /v1: jobs, hosts, logs, step
// operations, agents and dead letters, with RFC 9457 problems and 4xx
// statuses for errors.
package native

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/internal/jobstate"
	"github.com/fleetjob/fleetjob/schemas"
)

// Surface serves /v1.
type Surface struct {
	core *api.Core
}

// New returns the native surface. Every route authenticates a bearer
// token through the core (the admin token or a stored one).
func New(core *api.Core) *Surface { return &Surface{core: core} }

// WriteError answers an RFC 9457 problem.
func (s *Surface) WriteError(c echo.Context, err error) { api.WriteProblem(c, s.core.Log, err) }

// Register adds the /v1 routes behind the bearer token.
func (s *Surface) Register(e *echo.Echo) {
	// Per-route middleware, not a group's: a group with middleware
	// answers every unknown method 404 instead of 405.
	auth := s.core.BearerAuth("native")
	admin := s.core.RequireAdmin()
	g := e.Group("/v1")
	g.POST("/jobs", s.createJob, auth)
	g.GET("/jobs", s.listJobs, auth)
	g.GET("/jobs/:id", s.getJob, auth)
	g.GET("/jobs/:id/hosts", s.jobHosts, auth)
	g.GET("/jobs/:id/hosts/:host/log", s.hostLog, auth)
	g.GET("/jobs/:id/callback", s.jobCallback, auth)
	g.POST("/jobs/:id/stop", s.stopJob, auth)
	g.POST("/jobs/:id/steps/:step/:op", s.operateStep, auth)
	g.GET("/agents", s.listAgents, auth)
	g.GET("/deadletters", s.listDeadLetters, admin)
	s.registerIdentities(g, admin)
	s.registerAccounts(g, admin)
	s.registerEnrol(g, admin)
}

// SubmitRequest is the body of POST /v1/jobs.
type SubmitRequest struct {
	Name          string         `json:"name"`
	Steps         []schemas.Step `json:"steps"`
	Targets       []schemas.Host `json:"targets"`
	Concurrency   int            `json:"concurrency"`
	AgentWait     int            `json:"agent_wait"`
	CorrelationID string         `json:"correlation_id"`
	CallbackURL   string         `json:"callback_url"`
	// Scope is the business the job belongs to ("biz:2"); a caller with
	// one scope may leave it out, admins may submit with none.
	Scope string `json:"scope"`
}

// SubmitResponse answers an accepted job.
type SubmitResponse struct {
	ID     int64  `json:"id"`
	Status string `json:"status"`
}

func (s *Surface) createJob(c echo.Context) error {
	var req SubmitRequest
	if err := api.DecodeStrict(c, &req); err != nil {
		return err
	}
	spec := &schemas.JobSpec{
		Name: req.Name, Steps: req.Steps, Targets: req.Targets, Concurrency: req.Concurrency,
		AgentWait: req.AgentWait, CorrelationID: req.CorrelationID, Surface: "native", CallbackURL: req.CallbackURL,
		Source: c.Request().Header.Get("X-Source"),
	}
	if req.Scope != "" {
		sc, err := schemas.ParseScope(req.Scope)
		if err != nil {
			return schemas.Invalid("scope", "%v", err)
		}
		spec.Scope = &sc
	}
	if spec.CorrelationID == "" {
		spec.CorrelationID = c.Request().Header.Get("X-Correlation-ID")
	}
	key := c.Request().Header.Get("Idempotency-Key")
	if len(key) > 256 {
		return schemas.Invalid("Idempotency-Key", "longer than 256 characters")
	}
	fp := ""
	if key != "" { // (the core keeps each caller's keys apart: see api.Claim)
		fp = api.Fingerprint(req)
	}
	id, _, err := s.core.Submit(c.Request().Context(), spec, api.IdempotencyClaim(key, fp))
	if err != nil {
		return err
	}
	c.Response().Header().Set("Location", "/v1/jobs/"+strconv.FormatInt(id, 10))
	return c.JSON(http.StatusAccepted, SubmitResponse{ID: id, Status: schemas.JobWaiting})
}

func pathID(c echo.Context) (int64, error) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, schemas.Invalid("id", "%q is not a job id", c.Param("id"))
	}
	return id, nil
}

func (s *Surface) getJob(c echo.Context) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	sum, err := s.core.Jobs.Job(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, sum)
}

// ListResponse is a page of items.
type ListResponse[T any] struct {
	Items []T `json:"items"`
	Total int `json:"total"`
	Page  int `json:"page"`
	Size  int `json:"size"`
}

// query collects integer query parameters and the errors of the bad ones.
type query struct {
	c  echo.Context
	fe schemas.FieldErrors
}

// int reads one integer parameter (def when absent) within [lo, hi].
func (q *query) int(name string, def, lo, hi int) int {
	n, err := intParam(q.c, name, def, lo, hi)
	if err != nil {
		q.fe = append(q.fe, err.(schemas.FieldErrors)...)
	}
	return n
}

func intParam(c echo.Context, name string, def, lo, hi int) (int, error) {
	v := c.QueryParam(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, schemas.Invalid(name, "want an integer from %d to %d, got %q", lo, hi, v)
	}
	return n, nil
}

func (s *Surface) listJobs(c echo.Context) error {
	qp := query{c: c}
	page := qp.int("page", 1, 1, 1<<30)
	size := qp.int("size", 50, 1, 1000)
	q := api.JobQuery{Page: page, Size: size, Status: c.QueryParam("status"), Name: c.QueryParam("name"), Sort: c.QueryParam("sort")}
	switch q.Sort {
	case "", "id", "created_at", "updated_at":
	default:
		qp.fe.Add("sort", "want id, created_at or updated_at")
	}
	switch c.QueryParam("order") {
	case "", "desc":
		q.Desc = true
	case "asc":
	default:
		qp.fe.Add("order", "want asc or desc")
	}
	if q.Status != "" && !validJobStatus(q.Status) {
		qp.fe.Add("status", "unknown status %q (want one of %s)", q.Status, strings.Join(schemas.JobStatuses, ", "))
	}
	if err := qp.fe.Err(); err != nil {
		return err
	}
	items, total, err := s.core.Search.List(c.Request().Context(), q)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ListResponse[schemas.JobSummary]{Items: items, Total: total, Page: page, Size: size})
}

func validJobStatus(st string) bool {
	for _, s := range schemas.JobStatuses {
		if s == st {
			return true
		}
	}
	return false
}

// HostView is one host of a job in the native API.
type HostView struct {
	schemas.HostRow
	DurationMS int64 `json:"duration_ms"`
}

func (s *Surface) jobHosts(c echo.Context) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	qp := query{c: c}
	page := qp.int("page", 1, 1, 1<<30)
	size := qp.int("size", 1000, 1, 10000)
	step := qp.int("step", -1, 0, schemas.MaxSteps-1)
	status := c.QueryParam("status")
	if _, ok := schemas.ParseHostStatus(status); status != "" && !ok {
		qp.fe.Add("status", "unknown host status %q (want one of %s)", status, strings.Join(schemas.HostStatusNames(), ", "))
	}
	if err := qp.fe.Err(); err != nil {
		return err
	}
	rows, err := s.core.Jobs.Hosts(c.Request().Context(), id)
	if err != nil {
		return err
	}
	out := make([]HostView, 0, len(rows))
	for _, r := range rows {
		if (status != "" && r.Status.String() != status) || (step >= 0 && r.Step != step) {
			continue
		}
		out = append(out, HostView{HostRow: r, DurationMS: r.DurationMS()})
	}
	return c.JSON(http.StatusOK, pageOf(out, page, size))
}

// LogResponse is a range of one host's log.
type LogResponse struct {
	JobID   int64        `json:"job_id"`
	Step    int          `json:"step"`
	Host    schemas.Host `json:"host"`
	Attempt int          `json:"attempt"`
	schemas.LogPage
}

func (s *Surface) hostLog(c echo.Context) error {
	ctx := c.Request().Context()
	id, err := pathID(c)
	if err != nil {
		return err
	}
	host, err := schemas.ParseHost(c.Param("host"))
	if err != nil {
		return schemas.Invalid("host", "%q is not an IP or cloud:IP", c.Param("host"))
	}
	qp := query{c: c}
	from := qp.int("from", 0, 0, 1<<31-1)
	limit := qp.int("limit", 100, 1, 10000)
	step := qp.int("step", -1, 0, schemas.MaxSteps-1)
	attempt := qp.int("attempt", 0, 1, 255)
	if err := qp.fe.Err(); err != nil {
		return err
	}
	ref, err := s.logRef(ctx, id, step, host)
	if err != nil {
		return err
	}
	if attempt > 0 {
		if attempt > ref.Attempt {
			return schemas.Invalid("attempt", "the host has run %d times", ref.Attempt)
		}
		ref.Attempt = attempt
	}
	page, err := s.core.Logs.Read(ctx, ref, from, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, LogResponse{JobID: id, Step: ref.Step, Host: host, Attempt: ref.Attempt, LogPage: page})
}

// logRef finds a host's log in a job: in the given step, or else in the
// latest step so far that targets the host.
func (s *Surface) logRef(ctx context.Context, id int64, step int, host schemas.Host) (schemas.LogRef, error) {
	spec, state, err := s.core.Jobs.Load(ctx, id)
	if err != nil {
		return schemas.LogRef{}, err
	}
	steps := []int{step}
	if step < 0 {
		steps = steps[:0]
		for i := state.Step; i >= 0; i-- {
			steps = append(steps, i)
		}
	}
	for _, st := range steps {
		if st >= len(spec.Steps) {
			return schemas.LogRef{}, schemas.Invalid("step", "job %d has %d steps", id, len(spec.Steps))
		}
		for i, h := range spec.Steps[st].Targets {
			if h == host {
				return schemas.LogRef{Job: id, Step: st, Host: i, Attempt: state.Steps[st].Hosts.AttemptOf(i)}, nil
			}
		}
	}
	return schemas.LogRef{}, hostNotInJob(host, id)
}

func hostNotInJob(h schemas.Host, id int64) error {
	return schemas.NotFound("host %s is not a target of job %d", h, id)
}

func (s *Surface) stopJob(c echo.Context) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	if err := s.core.Stop(c.Request().Context(), id, ""); err != nil {
		return err
	}
	c.Response().Header().Set("Location", "/v1/jobs/"+strconv.FormatInt(id, 10))
	return c.JSON(http.StatusAccepted, map[string]any{"id": id, "status": schemas.JobStopping})
}

// AgentView is an agent in the native API.
type AgentView struct {
	schemas.AgentInfo
	Online bool `json:"online"`
}

func (s *Surface) listAgents(c echo.Context) error {
	qp := query{c: c}
	page := qp.int("page", 1, 1, 1<<30)
	size := qp.int("size", 100, 1, 10000)
	online := c.QueryParam("online")
	if online != "" && online != "true" && online != "false" {
		qp.fe.Add("online", "want true or false")
	}
	label, value, hasLabel := strings.Cut(c.QueryParam("label"), "=")
	if c.QueryParam("label") != "" && (!hasLabel || label == "") {
		qp.fe.Add("label", "want k=v")
	}
	if err := qp.fe.Err(); err != nil {
		return err
	}
	agents, err := s.core.VisibleAgents(c.Request().Context())
	if err != nil {
		return err
	}
	now := time.Now()
	all := []AgentView{}
	for _, a := range agents {
		v := AgentView{AgentInfo: a, Online: a.Online(now, s.core.Agents.TTL())}
		if (online != "" && strconv.FormatBool(v.Online) != online) || (hasLabel && a.Labels[label] != value) {
			continue
		}
		all = append(all, v)
	}
	slices.SortFunc(all, func(a, b AgentView) int { return strings.Compare(a.ID, b.ID) })
	return c.JSON(http.StatusOK, pageOf(all, page, size))
}

// pageOf answers page (from 1) of size items of all.
func pageOf[T any](all []T, page, size int) ListResponse[T] {
	from := min((page-1)*size, len(all))
	items := all[from:min(from+size, len(all))]
	if items == nil {
		items = []T{}
	}
	return ListResponse[T]{Items: items, Total: len(all), Page: page, Size: size}
}

// nativeOps maps the path words of step operations to their commands.
var nativeOps = map[string]string{
	"confirm": schemas.OpConfirm, "skip": schemas.OpSkip, "retry-failed": schemas.OpRetryFailed,
	"retry-all": schemas.OpRetryAll, "ignore-error": schemas.OpIgnoreError,
}

func (s *Surface) operateStep(c echo.Context) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	step, err := strconv.Atoi(c.Param("step"))
	if err != nil || step < 0 {
		return schemas.Invalid("step", "%q is not a step index (0-based)", c.Param("step"))
	}
	op, ok := nativeOps[c.Param("op")]
	if !ok {
		return schemas.Invalid("op", "unknown operation %q (want confirm, skip, retry-failed, retry-all or ignore-error)", c.Param("op"))
	}
	if err := s.core.Operate(c.Request().Context(), id, step, op, ""); err != nil {
		var refused *jobstate.Refusal
		if errors.As(err, &refused) { // in the URL's words
			return schemas.Conflict("%s on step %d: %s", c.Param("op"), step, refused.Reason)
		}
		return err
	}
	c.Response().Header().Set("Location", "/v1/jobs/"+strconv.FormatInt(id, 10))
	return c.JSON(http.StatusAccepted, map[string]any{"id": id, "step": step, "op": c.Param("op")})
}

// jobCallback answers a job's callback delivery record.
func (s *Surface) jobCallback(c echo.Context) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	rec, ok, err := s.core.Callbacks.Callback(c.Request().Context(), id)
	if err != nil {
		return err
	}
	if !ok {
		return schemas.NotFound("job %d has no callback", id)
	}
	return c.JSON(http.StatusOK, rec)
}

// listDeadLetters answers the messages that failed for good, newest first.
func (s *Surface) listDeadLetters(c echo.Context) error {
	ctx := c.Request().Context()
	qp := query{c: c}
	page := qp.int("page", 1, 1, 1<<30)
	size := qp.int("size", 50, 1, 1000)
	if err := qp.fe.Err(); err != nil {
		return err
	}
	all, err := s.core.DeadLetters.DeadLetters(ctx)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, pageOf(all, page, size))
}
