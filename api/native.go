package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/fleetjob/fleetjob/internal/jobstate"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/callback"
	"github.com/fleetjob/fleetjob/workers/statuscache"
)

func (s *Server) nativeRoutes(g *echo.Group) {
	g.POST("/jobs", s.createJob)
	g.GET("/jobs", s.listJobs)
	g.GET("/jobs/:id", s.getJob)
	g.GET("/jobs/:id/hosts", s.jobHosts)
	g.GET("/jobs/:id/hosts/:host/log", s.hostLog)
	g.GET("/jobs/:id/callback", s.jobCallback)
	g.POST("/jobs/:id/stop", s.stopJob)
	g.POST("/jobs/:id/steps/:step/:op", s.operateStep)
	g.GET("/agents", s.listAgents)
	g.GET("/deadletters", s.listDeadLetters)
}

// problemBody is an RFC 9457 problem document.
type problemBody struct {
	Type   string               `json:"type"`
	Title  string               `json:"title"`
	Status int                  `json:"status"`
	Detail string               `json:"detail,omitempty"`
	Errors []schemas.FieldError `json:"errors,omitempty"`
}

func (s *Server) problem(err error, c echo.Context) {
	code := statusOf(err)
	p := problemBody{Type: "about:blank", Status: code, Detail: err.Error()}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		p.Detail = fmt.Sprint(he.Message)
	}
	var fe schemas.FieldErrors
	if errors.As(err, &fe) {
		p.Errors = fe
		p.Detail = "the request has invalid fields"
	}
	if code == 0 {
		s.log.Error("request failed", "path", c.Request().URL.Path, "correlation_id", c.Request().Header.Get("X-Correlation-ID"), "err", err)
		p.Status, p.Detail = http.StatusInternalServerError, "internal error"
	}
	p.Title = http.StatusText(p.Status)
	b, _ := json.Marshal(p)
	_ = c.Blob(p.Status, "application/problem+json", b)
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
}

// SubmitResponse answers an accepted job.
type SubmitResponse struct {
	ID     int64  `json:"id"`
	Status string `json:"status"`
}

func (s *Server) createJob(c echo.Context) error {
	var req SubmitRequest
	if err := decodeStrict(c, &req); err != nil {
		return err
	}
	spec := &schemas.JobSpec{
		Name: req.Name, Steps: req.Steps, Targets: req.Targets, Concurrency: req.Concurrency,
		AgentWait: req.AgentWait, CorrelationID: req.CorrelationID, Surface: "native", CallbackURL: req.CallbackURL,
		Owner: "admin", Source: c.Request().Header.Get("X-Source"),
	}
	if spec.CorrelationID == "" {
		spec.CorrelationID = c.Request().Header.Get("X-Correlation-ID")
	}
	key := c.Request().Header.Get("Idempotency-Key")
	if len(key) > 256 {
		return schemas.Invalid("Idempotency-Key", "longer than 256 characters")
	}
	id, _, err := s.submit(c.Request().Context(), spec, idemClaim(key))
	if err != nil {
		return err
	}
	c.Response().Header().Set("Location", "/v1/jobs/"+strconv.FormatInt(id, 10))
	return c.JSON(http.StatusAccepted, SubmitResponse{ID: id, Status: schemas.JobWaiting})
}

// claim is how a submission is made unique: a key in the names bucket and
// the JetStream message id that goes with it. A zero claim is no claim.
type claim struct {
	key   string // names bucket key
	msgID string
	// strict refuses a repeat instead of answering with the first job.
	strict bool
}

func idemClaim(key string) claim {
	if key == "" {
		return claim{}
	}
	return claim{key: "idem." + hashKey(key), msgID: "idem:" + key}
}

// submit validates a spec and publishes it as one submit command. With a
// claim, a repeat answers the first job's id (dup true), or ErrConflict when
// the claim is strict.
func (s *Server) submit(ctx context.Context, spec *schemas.JobSpec, cl claim) (int64, bool, error) {
	if err := spec.Normalize(); err != nil {
		return 0, false, err
	}
	if err := s.checkRisk(spec); err != nil {
		return 0, false, err
	}
	if cl.key != "" {
		id, found, err := s.deps.Claims.Lookup(ctx, cl.key)
		if err != nil {
			return 0, false, err
		}
		if found {
			if cl.strict {
				return id, true, schemas.Conflict("the name or key is already taken by job %d", id)
			}
			return id, true, nil
		}
	}
	body, _ := json.Marshal(schemas.SubmitCommand{V: schemas.MessageVersion, Spec: *spec, SubmittedAt: time.Now().UTC()})
	seq, dup, err := s.deps.Publisher.Publish(ctx, schemas.SubjSubmit, body, cl.msgID)
	if err != nil {
		return 0, false, fmt.Errorf("submit: %w", err)
	}
	id := int64(seq)
	if cl.key != "" {
		if _, err := s.deps.Claims.Claim(ctx, cl.key, id); err != nil {
			s.log.Warn("claim not recorded", "key", cl.key, "job", id, "err", err)
		}
		if dup && cl.strict {
			return id, true, schemas.Conflict("the name or key is already taken by job %d", id)
		}
	}
	if !dup {
		s.m.submitted.WithLabelValues(spec.Surface).Inc()
		st := schemas.NewJobState(id, spec, time.Now().UTC())
		if s.deps.Queued != nil {
			s.deps.Queued.Queued(spec, st)
		} else if err := s.deps.Cache.Queued(ctx, spec, st); err != nil {
			s.log.Warn("cache queued job", "job", id, "err", err)
		}
	}
	return id, dup, nil
}

func pathID(c echo.Context) (int64, error) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, schemas.Invalid("id", "%q is not a job id", c.Param("id"))
	}
	return id, nil
}

func (s *Server) getJob(c echo.Context) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	sum, err := s.deps.Cache.Job(c.Request().Context(), id)
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

func (s *Server) listJobs(c echo.Context) error {
	qp := query{c: c}
	page := qp.int("page", 1, 1, 1<<30)
	size := qp.int("size", 50, 1, 1000)
	q := statuscache.ListQuery{Page: page, Size: size, Status: c.QueryParam("status"), Name: c.QueryParam("name"), Sort: c.QueryParam("sort")}
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
	items, total, err := s.deps.Cache.List(c.Request().Context(), q)
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

func (s *Server) jobHosts(c echo.Context) error {
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
	rows, err := s.deps.Cache.Hosts(c.Request().Context(), id)
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
	total := len(out)
	from := min((page-1)*size, total)
	return c.JSON(http.StatusOK, ListResponse[HostView]{Items: out[from:min(from+size, total)], Total: total, Page: page, Size: size})
}

// LogResponse is a range of one host's log.
type LogResponse struct {
	JobID   int64        `json:"job_id"`
	Step    int          `json:"step"`
	Host    schemas.Host `json:"host"`
	Attempt int          `json:"attempt"`
	schemas.LogPage
}

func (s *Server) hostLog(c echo.Context) error {
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
	page, err := s.deps.Logs.Read(ctx, ref, from, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, LogResponse{JobID: id, Step: ref.Step, Host: host, Attempt: ref.Attempt, LogPage: page})
}

// logRef finds a host's log in a job: in the given step, or else in the
// latest step so far that targets the host.
func (s *Server) logRef(ctx context.Context, id int64, step int, host schemas.Host) (schemas.LogRef, error) {
	spec, state, _, err := s.deps.Cache.Load(ctx, id)
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

func (s *Server) stopJob(c echo.Context) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	if err := s.stop(c.Request().Context(), id, "admin"); err != nil {
		return err
	}
	c.Response().Header().Set("Location", "/v1/jobs/"+strconv.FormatInt(id, 10))
	return c.JSON(http.StatusAccepted, map[string]any{"id": id, "status": schemas.JobStopping})
}

// errFinished refuses to stop a job that has already ended.
var errFinished = schemas.Conflict("job already finished")

// stop publishes a stop command for a job that exists and has not ended.
func (s *Server) stop(ctx context.Context, id int64, by string) error {
	sum, err := s.deps.Cache.Job(ctx, id)
	if err != nil {
		return err
	}
	if schemas.JobFinal(sum.Status) {
		return fmt.Errorf("job %d is %s: %w", id, sum.Status, errFinished)
	}
	body, _ := json.Marshal(schemas.StopCommand{V: schemas.MessageVersion, JobID: id, By: by})
	if _, _, err := s.deps.Publisher.Publish(ctx, schemas.SubjStop, body, ""); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	return nil
}

// AgentView is an agent in the native API.
type AgentView struct {
	schemas.AgentInfo
	Online bool `json:"online"`
}

func (s *Server) listAgents(c echo.Context) error {
	var fe schemas.FieldErrors
	online := c.QueryParam("online")
	if online != "" && online != "true" && online != "false" {
		fe.Add("online", "want true or false")
	}
	label, value, hasLabel := strings.Cut(c.QueryParam("label"), "=")
	if c.QueryParam("label") != "" && (!hasLabel || label == "") {
		fe.Add("label", "want k=v")
	}
	if err := fe.Err(); err != nil {
		return err
	}
	now := time.Now()
	out := []AgentView{}
	for _, a := range s.deps.Agents.All() {
		v := AgentView{AgentInfo: a, Online: a.Online(now, s.deps.Agents.TTL())}
		if (online != "" && strconv.FormatBool(v.Online) != online) || (hasLabel && a.Labels[label] != value) {
			continue
		}
		out = append(out, v)
	}
	return c.JSON(http.StatusOK, ListResponse[AgentView]{Items: out, Total: len(out), Page: 1, Size: len(out)})
}

// nativeOps maps the path words of step operations to their commands.
var nativeOps = map[string]string{
	"confirm": schemas.OpConfirm, "skip": schemas.OpSkip, "retry-failed": schemas.OpRetryFailed,
	"retry-all": schemas.OpRetryAll, "ignore-error": schemas.OpIgnoreError,
}

func (s *Server) operateStep(c echo.Context) error {
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
	if err := s.operate(c.Request().Context(), id, step, op, "admin"); err != nil {
		return err
	}
	c.Response().Header().Set("Location", "/v1/jobs/"+strconv.FormatInt(id, 10))
	return c.JSON(http.StatusAccepted, map[string]any{"id": id, "step": step, "op": c.Param("op")})
}

// operate checks an operation against the job's current state and
// publishes it; the worker checks again when it applies it.
func (s *Server) operate(ctx context.Context, id int64, step int, op, by string) error {
	_, st, _, err := s.deps.Cache.Load(ctx, id)
	if err != nil {
		return err
	}
	if err := jobstate.CheckOp(st, op, step); err != nil {
		return err
	}
	body, _ := json.Marshal(schemas.OpCommand{V: schemas.MessageVersion, JobID: id, Step: step, Op: op, By: by})
	if _, _, err := s.deps.Publisher.Publish(ctx, schemas.SubjOp, body, ""); err != nil {
		return fmt.Errorf("operate: %w", err)
	}
	return nil
}

// checkRisk runs every script step through the high-risk command rules:
// an intercept refuses the job, scan findings are recorded on it.
func (s *Server) checkRisk(spec *schemas.JobSpec) error {
	spec.Warnings = nil
	for i, st := range spec.Steps {
		if st.Script == nil {
			continue
		}
		findings, err := s.deps.Risk.Check(st.Script.Interpreter, st.Script.Content)
		if err != nil {
			return fmt.Errorf("step %d: %w", i+1, err)
		}
		for _, f := range findings {
			spec.Warnings = append(spec.Warnings, schemas.RiskFinding{Step: i, RuleID: f.RuleID, Action: f.Action,
				Description: f.Description, Line: f.Line, Text: f.Text})
		}
	}
	return nil
}

// jobCallback answers a job's callback delivery record.
func (s *Server) jobCallback(c echo.Context) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	rec, ok, err := callback.Get(c.Request().Context(), s.deps.Cache.JobsBucket(), id)
	if err != nil {
		return err
	}
	if !ok {
		return schemas.NotFound("job %d has no callback", id)
	}
	return c.JSON(http.StatusOK, rec)
}

// listDeadLetters answers the messages that failed for good, newest first.
func (s *Server) listDeadLetters(c echo.Context) error {
	ctx := c.Request().Context()
	qp := query{c: c}
	page := qp.int("page", 1, 1, 1<<30)
	size := qp.int("size", 50, 1, 1000)
	if err := qp.fe.Err(); err != nil {
		return err
	}
	lister, err := s.deps.DeadLetters.ListKeys(ctx)
	if err != nil {
		return schemas.Unavailable(err, "dead letters")
	}
	var all []schemas.DeadLetter
	for k := range lister.Keys() {
		e, err := s.deps.DeadLetters.Get(ctx, k)
		if err != nil {
			continue
		}
		var dl schemas.DeadLetter
		if json.Unmarshal(e.Value(), &dl) == nil {
			all = append(all, dl)
		}
	}
	slices.SortFunc(all, func(a, b schemas.DeadLetter) int { return b.At.Compare(a.At) })
	from := min((page-1)*size, len(all))
	items := all[from:min(from+size, len(all))]
	if items == nil {
		items = []schemas.DeadLetter{}
	}
	return c.JSON(http.StatusOK, ListResponse[schemas.DeadLetter]{Items: items, Total: len(all), Page: page, Size: size})
}
