// Package octans serves the octans task channel (seed 001): POST /api/run,
// /api/parallel_run, /api/stop, /api/check and /api/getlog with the
// {code, content, message} envelope. As the original, every answer is
// HTTP 200 and code says what happened (0 success, -1 failure); only a
// missing or wrong token (when one is configured) is 401, and a path or
// method that is no API 404 or 405. Callers authenticate with a bearer
// token; clients that cannot send one are admitted only from the networks
// an admin listed (--octans-allow), each such request logged. A role that
// may not do what is asked is 403, a rate limit 429, in the same envelope.
package octans

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/schemas"
)

// Octans status codes.
const (
	octInit          = 0
	octRunning       = 1
	octSuccess       = 2
	octFailed        = 3
	octStopped       = 4
	octPartlySuccess = 5
)

// octansLogLines bounds the output /api/check returns per node.
const octansLogLines = 1000

// Surface serves the octans routes under /api.
type Surface struct {
	core *api.Core
}

// New returns the octans surface.
func New(core *api.Core) *Surface { return &Surface{core: core} }

// authenticate is the surface's authentication step, before any body is
// read: a bearer token when the request sends one (a wrong one is refused,
// never retried as a network), else a network grant for its source
// address; nothing is open by default.
func (s *Surface) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	bearer := s.core.BearerAuth(surfaceName)(next)
	return func(c echo.Context) error {
		if c.Request().Header.Get("Authorization") != "" {
			return bearer(c)
		}
		p, ok := s.core.AuthenticateNetwork(c)
		if !ok {
			return fmt.Errorf("a bearer token is required (or a source network an admin allowed): %w", api.ErrUnauthorized)
		}
		if err := s.core.Admit(c, p, surfaceName); err != nil {
			return err
		}
		s.core.Log.Info("octans request admitted by source network", "source", api.PrincipalOf(c.Request().Context()).Source,
			"network", p.Actor, "path", c.Request().URL.Path, "correlation_id", c.Request().Header.Get("X-CORRELATION-ID"))
		return next(c)
	}
}

const surfaceName = "octans"

// ClaimKind is the kind of the task names this surface claims in the
// names bucket (their keys start with it).
const ClaimKind = surfaceName

// Register adds the five octans routes.
func (s *Surface) Register(e *echo.Echo) {
	// Per-route middleware, not a group's: a group with middleware
	// answers every unknown method 404 instead of 405.
	auth := s.authenticate
	g := e.Group("/api")
	g.POST("/run", func(c echo.Context) error { return s.octansRun(c, false) }, auth)
	g.POST("/parallel_run", func(c echo.Context) error { return s.octansRun(c, true) }, auth)
	g.POST("/stop", s.octansStop, auth)
	g.POST("/check", s.octansCheck, auth)
	g.POST("/getlog", s.octansGetlog, auth)
}

type octansEnvelope struct {
	Code    int    `json:"code"`
	Content any    `json:"content,omitempty"`
	Message string `json:"message,omitempty"`
}

func octansOK(c echo.Context, content any) error {
	return c.JSON(http.StatusOK, octansEnvelope{Code: 0, Content: content})
}

// WriteError answers in the octans envelope with the seed's messages:
// HTTP 200 and code -1, as the original answers every failure; 401, 404,
// 405 and 413 keep their status (they come before any API is reached).
func (s *Surface) WriteError(c echo.Context, err error) {
	msg := api.Message(err)
	var fe schemas.FieldErrors
	switch {
	case errors.Is(err, api.ErrMalformed) && !errors.As(err, &fe):
		msg = "json encode error"
	case errors.As(err, &fe):
		msg = "param error, error: " + fe.Error()
	case errors.Is(err, api.ErrFinished):
		msg = "task already finished"
	case errors.Is(err, schemas.ErrConflict):
		msg = "task name is duplicate"
	case errors.Is(err, schemas.ErrNotFound):
		msg = "task not found..."
	}
	status := http.StatusOK
	var he *echo.HTTPError
	switch code := api.StatusOf(err); {
	case errors.Is(err, api.ErrUnauthorized), errors.Is(err, api.ErrForbidden), errors.Is(err, api.ErrRateLimited), errors.As(err, &he):
		status = code
	case code == 0:
		s.core.Log.Error("octans request failed", "path", c.Request().URL.Path, "correlation_id", c.Request().Header.Get("X-CORRELATION-ID"), "err", err)
		msg = "internal error"
	}
	_ = c.JSON(status, octansEnvelope{Code: -1, Message: msg})
}

// octansRunRequest is the body of /api/run. The seed's example sends the
// task under "content" while its table says "tasks": both are read.
type octansRunRequest struct {
	Nodes   []string        `json:"nodes"`
	User    string          `json:"user"`
	Name    string          `json:"name"`
	Tasks   json.RawMessage `json:"tasks"`
	Content json.RawMessage `json:"content"`
	Params  json.RawMessage `json:"params"`
	ForkNum json.RawMessage `json:"fork_num"`
}

func (s *Surface) octansRun(c echo.Context, parallel bool) error {
	var req octansRunRequest
	if err := api.DecodeStrict(c, &req); err != nil {
		return err
	}
	spec, err := req.spec(parallel)
	if err != nil {
		return err
	}
	spec.CorrelationID = c.Request().Header.Get("X-CORRELATION-ID")
	spec.Source = c.Request().Header.Get("X-SOURCE")
	if spec.Source == "" {
		spec.Source = c.Request().Header.Get("X-RESOURCE")
	}
	id, _, err := s.core.Submit(c.Request().Context(), spec, octansName(spec.Name))
	if err != nil {
		return octansFields(err)
	}
	return octansOK(c, map[string]int64{"id": id})
}

// octansFields renames the native spec's fields the core's checks name
// (the account alias resolution's, say) into the request's.
func octansFields(err error) error {
	var fe schemas.FieldErrors
	if !errors.As(err, &fe) {
		return err
	}
	out := make(schemas.FieldErrors, len(fe))
	for i, f := range fe {
		if f.Field == "steps[0].script.user" {
			f.Field = "user"
		}
		out[i] = f
	}
	return out
}

// octansName claims a task name for good: a second run with it is refused.
func octansName(name string) api.Claim { return api.NameClaim(ClaimKind, name) }

func (r *octansRunRequest) spec(parallel bool) (*schemas.JobSpec, error) {
	var fe schemas.FieldErrors
	name := strings.TrimSpace(r.Name)
	if name == "" {
		fe.Add("name", "required")
	}
	if len(r.Nodes) == 0 {
		fe.Add("nodes", "at least one node IP is required")
	}
	var targets []schemas.Host
	for i, n := range r.Nodes {
		h := schemas.Host{IP: n}
		if err := h.Validate(); err != nil {
			fe.Add(fmt.Sprintf("nodes[%d]", i), "%v", err)
			continue
		}
		targets = append(targets, h)
	}
	raw := r.Tasks
	if len(raw) == 0 {
		raw = r.Content
	}
	script, err := octansScript(raw)
	if err != nil {
		fe.Add("tasks", "%v", err)
	}
	env, err := octansParams(r.Params)
	if err != nil {
		fe.Add("params", "%v", err)
	}
	fork, err := octansForkNum(r.ForkNum)
	if err != nil {
		fe.Add("fork_num", "%v", err)
	}
	if err := fe.Err(); err != nil {
		return nil, err
	}
	if parallel {
		fork = len(targets)
	}
	return &schemas.JobSpec{
		Name: name, Owner: r.User, Surface: "octans", Targets: targets, Concurrency: fork,
		Steps: []schemas.Step{{Type: schemas.StepScript, Script: &schemas.Script{
			Content: script, Interpreter: "bash", Env: env, User: r.User,
		}}},
	}, nil
}

// octansRef is the body of /api/stop and /api/check.
type octansRef struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

func (s *Surface) octansResolve(c echo.Context) (int64, error) {
	var ref octansRef
	if err := api.DecodeStrict(c, &ref); err != nil {
		return 0, err
	}
	if ref.ID < 0 {
		return 0, schemas.Invalid("id", "must be positive")
	}
	if ref.ID > 0 {
		return ref.ID, nil
	}
	if strings.TrimSpace(ref.Name) == "" {
		return 0, schemas.Invalid("id", "id or name is required")
	}
	id, found, err := s.core.Resolve(c.Request().Context(), octansName(ref.Name))
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, schemas.NotFound("no task is named %q", ref.Name)
	}
	return id, nil
}

func (s *Surface) octansStop(c echo.Context) error {
	id, err := s.octansResolve(c)
	if err != nil {
		return err
	}
	if err := s.core.Stop(c.Request().Context(), id, ""); err != nil {
		return err
	}
	return octansOK(c, struct{}{})
}

func octansJobStatus(st string) int {
	switch st {
	case schemas.JobWaiting:
		return octInit
	case schemas.JobRunning, schemas.JobStopping, schemas.JobWaitingUser:
		return octRunning
	case schemas.JobSuccess:
		return octSuccess
	case schemas.JobStopped:
		return octStopped
	case schemas.JobPartial:
		return octPartlySuccess
	}
	return octFailed
}

func octansHostStatus(st schemas.HostStatus) int {
	switch st {
	case schemas.HostPending, schemas.HostWaitingAgent, schemas.HostDispatched, schemas.HostSkipped:
		return octInit // never ran (skipped: the job ended before it)
	case schemas.HostRunning:
		return octRunning
	case schemas.HostSuccess:
		return octSuccess
	case schemas.HostStopped:
		return octStopped
	}
	return octFailed
}

// octansNodeLog is one node's entry in /api/check's "log".
type octansNodeLog struct {
	Host      string `json:"host"`
	Status    int    `json:"status"`
	State     string `json:"state"`
	RC        *int   `json:"rc"`
	Stdout    string `json:"stdout"`
	Truncated bool   `json:"truncated,omitempty"`
	Msg       string `json:"msg,omitempty"`
	Start     string `json:"start,omitempty"`
	End       string `json:"end,omitempty"`
}

// octansCheckContent is /api/check's content. As in the seed, "log" and
// "nodes" are JSON documents inside strings and times are RFC 1123 GMT.
type octansCheckContent struct {
	CreateTime string  `json:"create_time"`
	Err        *string `json:"err"`
	ID         int64   `json:"id"`
	Log        string  `json:"log"`
	Nodes      string  `json:"nodes"`
	Status     int     `json:"status"`
	UpdateTime string  `json:"update_time"`
}

func httpTime(t time.Time) string { return t.UTC().Format(http.TimeFormat) }

func (s *Surface) octansCheck(c echo.Context) error {
	ctx := c.Request().Context()
	id, err := s.octansResolve(c)
	if err != nil {
		return err
	}
	sum, err := s.core.Jobs.Job(ctx, id)
	if err != nil {
		return err
	}
	rows, err := s.core.Jobs.Hosts(ctx, id)
	if err != nil {
		return err
	}
	nodes := make([]string, 0, len(rows))
	logs := make([]octansNodeLog, 0, len(rows))
	failed := 0
	for _, r := range rows {
		nodes = append(nodes, r.Host.IP)
		nl, err := s.octansNode(ctx, id, r)
		if err != nil {
			return err
		}
		if nl.Status == octFailed {
			failed++
		}
		logs = append(logs, nl)
	}
	out := octansCheckContent{
		CreateTime: httpTime(sum.CreatedAt), ID: id, Status: octansJobStatus(sum.Status),
		UpdateTime: httpTime(sum.UpdatedAt),
	}
	if failed > 0 {
		e := fmt.Sprintf("%d of %d nodes failed", failed, len(rows))
		out.Err = &e
	} else if sum.Reason != "" {
		out.Err = &sum.Reason
	}
	lb, _ := json.Marshal(logs)
	nb, _ := json.Marshal(nodes)
	out.Log, out.Nodes = string(lb), string(nb)
	return octansOK(c, out)
}

func (s *Surface) octansNode(ctx context.Context, id int64, r schemas.HostRow) (octansNodeLog, error) {
	nl := octansNodeLog{Host: r.Host.IP, Status: octansHostStatus(r.Status), State: r.Status.String(), RC: r.ExitCode, Msg: r.Error}
	if !r.StartedAt.IsZero() {
		nl.Start = r.StartedAt.UTC().Format(time.RFC3339)
	}
	if !r.EndedAt.IsZero() {
		nl.End = r.EndedAt.UTC().Format(time.RFC3339)
	}
	if octansHostStatus(r.Status) == octInit { // never ran: no log to read
		return nl, nil
	}
	page, err := s.core.Logs.Read(ctx, schemas.LogRef{Job: id, Step: r.Step, Host: r.Index, Attempt: max(r.Attempt, 1)}, 0, octansLogLines)
	if err != nil {
		return nl, err
	}
	nl.Stdout = strings.Join(page.Lines, "\n")
	nl.Truncated = page.Total > page.To
	return nl, nil
}

// octansGetlogRequest is the body of /api/getlog.
type octansGetlogRequest struct {
	Host   string `json:"host"`
	Source string `json:"source"`
}

// octansGetlogLimit bounds the rows /api/getlog returns (newest first).
const octansGetlogLimit = 100

func (s *Surface) octansGetlog(c echo.Context) error {
	ctx := c.Request().Context()
	var req octansGetlogRequest
	if err := api.DecodeStrict(c, &req); err != nil {
		return err
	}
	h := schemas.Host{IP: req.Host}
	if err := h.Validate(); err != nil {
		return schemas.Invalid("host", "%v", err)
	}
	ids, err := s.core.Search.HostJobs(ctx, h, octansGetlogLimit*4)
	if err != nil {
		return err
	}
	rows := []string{}
	for _, id := range ids {
		if len(rows) == octansGetlogLimit {
			break
		}
		sum, err := s.core.Jobs.Job(ctx, id)
		if errors.Is(err, schemas.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if req.Source != "" && sum.Source != req.Source {
			continue
		}
		hosts, err := s.core.Jobs.Hosts(ctx, id)
		if err != nil {
			return err
		}
		for _, r := range hosts {
			if r.Host != h {
				continue
			}
			start, end := sum.CreatedAt, sum.EndedAt
			if !r.StartedAt.IsZero() {
				start = r.StartedAt
			}
			if !r.EndedAt.IsZero() {
				end = r.EndedAt
			}
			result := r.Status.String()
			if r.Status == schemas.HostSuccess {
				result = "ok"
			}
			rows = append(rows, fmt.Sprintf("global_id = %s, source = %s, create_time = %s, end_time = %s, host = %s, result = %s",
				sum.CorrelationID, sum.Source, rfc3339(start), rfc3339(end), r.Host.IP, result))
			break
		}
	}
	if len(rows) == 0 {
		return schemas.NotFound("no task ran on host %s", h.IP)
	}
	return octansOK(c, rows)
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
