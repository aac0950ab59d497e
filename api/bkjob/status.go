package bkjob

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/schemas"
)

// get_job_instance_status and get_job_instance_list, and the status codes.

// BlueKing per-host task codes (AgentTaskStatusEnum), used as
// step_ip_result.status and, when the host did not succeed, error_code.
const (
	bkHostAgentError     = 1
	bkHostWaiting        = 5
	bkHostRunning        = 7
	bkHostSuccess        = 9
	bkHostTaskTimeout    = 13
	bkHostScriptFailed   = 101
	bkHostScriptTimeout  = 102
	bkHostScriptKilled   = 103
	bkHostScriptNonZero  = 104
	bkHostCopyFailed     = 202
	bkHostSourceMissing  = 203
	bkHostGSEAgentError  = 310
	bkHostUserMissing    = 311
	bkHostFileTooLarge   = 321
	bkHostTerminated     = 403 // terminate succeeded
	bkHostTerminateFail  = 404 // terminate failed: the agent never confirmed
	bkStepTypeScript     = 1
	bkStepTypeFile       = 2
	bkLaunchModeAPI      = 2
	bkMaxListLength      = 1000
	bkDefaultListLength  = 20
	bkMaxListSpan        = 30 * 24 * time.Hour
	bkListCreationSlack  = time.Hour
	bkListScanPage       = 500
	bkFinishedStatusBits = 1<<BKSuccess | 1<<BKFailed | 1<<BKSkipped | 1<<BKIgnoreError |
		1<<BKTerminated | 1<<BKAbnormal | 1<<BKStopSuccess | 1<<BKConfirmedStop | 1<<14
)

// bkFinished reports bk-job's finished statuses (RunStatusEnum.isFinishedStatus).
func bkFinished(code int) bool { return code >= 0 && code < 64 && bkFinishedStatusBits&(1<<code) != 0 }

// bkHostCodes maps a host's outcome to BlueKing's status and error_code:
// the most specific AgentTaskStatusEnum value in both (error_code 0 when
// the host has not failed), as the reference recommends (§10.3, §14 #10-11).
func bkHostCodes(r schemas.HostRow, file bool) (status, errorCode int) {
	switch r.Status {
	case schemas.HostPending, schemas.HostWaitingAgent, schemas.HostDispatched, schemas.HostSkipped:
		return bkHostWaiting, 0 // not run (a skipped host never ran)
	case schemas.HostRunning:
		return bkHostRunning, 0
	case schemas.HostSuccess:
		return bkHostSuccess, 0
	case schemas.HostStopped:
		if r.Error == schemas.ReasonNoTerminateAck {
			return bkHostTerminateFail, bkHostTerminateFail
		}
		return bkHostTerminated, bkHostTerminated
	case schemas.HostAgentOffline:
		return bkHostAgentError, bkHostAgentError
	case schemas.HostInterrupted:
		return bkHostGSEAgentError, bkHostGSEAgentError
	}
	code := bkFailureCode(r, file)
	return code, code
}

// bkFailureCode reads a failed or timed-out host's cause from its result.
func bkFailureCode(r schemas.HostRow, file bool) int {
	msg := strings.ToLower(r.Error)
	switch {
	case r.Status == schemas.HostTimeout && file:
		return bkHostTaskTimeout
	case r.Status == schemas.HostTimeout:
		return bkHostScriptTimeout
	case strings.Contains(msg, "killed"):
		return bkHostScriptKilled
	case strings.Contains(msg, "user ") && strings.Contains(msg, "does not exist"), strings.Contains(msg, "cannot run scripts as"):
		return bkHostUserMissing
	case file && (strings.Contains(msg, "file source failed") || strings.Contains(msg, "source file") || strings.Contains(msg, "no source file")):
		return bkHostSourceMissing
	case file && (strings.Contains(msg, "too large") || strings.Contains(msg, "exceeds")):
		return bkHostFileTooLarge
	case file:
		return bkHostCopyFailed
	case r.ExitCode != nil && *r.ExitCode != 0:
		return bkHostScriptNonZero
	}
	return bkHostScriptFailed
}

// bkStepStatus is a step's BlueKing status: a held rolling step waits for a
// user (7); a running step of a stopping job is terminating (10).
func bkStepStatus(st *schemas.JobState, i int) int {
	ss := st.Steps[i]
	switch {
	case ss.Hold != "" && st.Status != schemas.JobStopping:
		return BKWaitingUser
	case st.Status == schemas.JobStopping && !bkFinished(BKRunStatus(ss.Status)) && ss.Status != schemas.JobWaiting:
		return BKStopping
	}
	return BKRunStatus(ss.Status)
}

// bkMillis is a time as Unix milliseconds, null when unset.
func bkMillis(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	ms := t.UnixMilli()
	return &ms
}

// bkTotal is a duration in milliseconds, null until it has ended.
func bkTotal(start, end time.Time) *int64 {
	if start.IsZero() || end.IsZero() {
		return nil
	}
	ms := max(end.UnixMilli()-start.UnixMilli(), 0) // agrees with the two times as sent
	return &ms
}

func bkStepType(st schemas.Step) int {
	if st.Type == schemas.StepFile {
		return bkStepTypeFile
	}
	return bkStepTypeScript
}

// bkStatusRequest is get_job_instance_status's parameters.
type bkStatusRequest struct {
	bkCommon
	JobInstanceID  bkInt  `json:"job_instance_id"`
	ReturnIPResult bkBool `json:"return_ip_result"`
}

type bkJobInstance struct {
	JobInstanceID int64  `json:"job_instance_id"`
	BizID         *int64 `json:"bk_biz_id,omitempty"` // only for bk_biz_id requests
	ScopeType     string `json:"bk_scope_type"`
	ScopeID       string `json:"bk_scope_id"`
	Name          string `json:"name"`
	CreateTime    *int64 `json:"create_time"`
	Status        int    `json:"status"`
	StartTime     *int64 `json:"start_time"`
	EndTime       *int64 `json:"end_time"`
	TotalTime     *int64 `json:"total_time"`
}

type bkStepInstance struct {
	StepInstanceID int64          `json:"step_instance_id"`
	Type           int            `json:"type"`
	Name           string         `json:"name"`
	Status         int            `json:"status"`
	CreateTime     *int64         `json:"create_time"`
	StartTime      *int64         `json:"start_time"`
	EndTime        *int64         `json:"end_time"`
	TotalTime      *int64         `json:"total_time"`
	ExecuteCount   int            `json:"execute_count"`
	IPResults      []bkHostResult `json:"step_ip_result_list,omitempty"`
}

type bkHostResult struct {
	bkHostRef
	Status    int    `json:"status"`
	Tag       string `json:"tag"`
	ExitCode  int    `json:"exit_code"`
	ErrorCode int    `json:"error_code"`
	StartTime *int64 `json:"start_time"`
	EndTime   *int64 `json:"end_time"`
	TotalTime *int64 `json:"total_time"`
}

type bkStatusData struct {
	Finished    bool             `json:"finished"`
	JobInstance bkJobInstance    `json:"job_instance"`
	Steps       []bkStepInstance `json:"step_instance_list"`
}

func (s *Surface) bkGetJobInstanceStatus(c echo.Context) error {
	var req bkStatusRequest
	if _, err := s.bkBind(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context() // after authentication: it carries the principal
	var v bkInvalid
	sc := req.scope(&v)
	id := bkJobID(req.JobInstanceID, &v)
	if err := v.err(); err != nil {
		return err
	}
	spec, st, err := s.bkJob(ctx, id, sc)
	if err != nil {
		return err
	}
	var rows map[int][]schemas.HostRow
	var hosts *bkHostIndex
	if req.ReturnIPResult.V {
		if rows, err = s.bkRows(ctx, spec, st); err != nil {
			return err
		}
		hosts = s.bkHosts(spec)
	}
	status := BKRunStatus(st.Status)
	out := bkStatusData{
		Finished: bkFinished(status),
		JobInstance: bkJobInstance{
			JobInstanceID: id, BizID: req.legacyBizID(), ScopeType: sc.Type, ScopeID: sc.ID, Name: spec.Name, Status: status,
			CreateTime: bkMillis(st.CreatedAt), StartTime: bkMillis(st.StartedAt), EndTime: bkMillis(st.EndedAt),
			TotalTime: bkTotal(st.StartedAt, st.EndedAt),
		},
		Steps: make([]bkStepInstance, 0, len(st.Steps)),
	}
	for i, ss := range st.Steps {
		name := spec.Steps[i].Name
		if name == "" {
			name = spec.Name
		}
		attempts := 1
		for j := range ss.Hosts.Status {
			attempts = max(attempts, ss.Hosts.AttemptOf(j))
		}
		step := bkStepInstance{
			StepInstanceID: BKStepInstanceID(id, i), Type: bkStepType(spec.Steps[i]), Name: name,
			Status: bkStepStatus(st, i), CreateTime: bkMillis(st.CreatedAt), StartTime: bkMillis(ss.StartedAt),
			EndTime: bkMillis(ss.EndedAt), TotalTime: bkTotal(ss.StartedAt, ss.EndedAt), ExecuteCount: attempts - 1,
		}
		for _, r := range rows[i] {
			step.IPResults = append(step.IPResults, bkHostResultOf(r, hosts, spec.Steps[i].Type == schemas.StepFile))
		}
		out.Steps = append(out.Steps, step)
	}
	return bkOK(c, "", out)
}

// bkRows returns every step's target rows with the statuses of st, the
// state read from KV: the cached rows may lag behind it (the workers write
// the cache after the commit). A final host whose cached row lags is read
// from its stored result; a running one gets its start from the state.
func (s *Surface) bkRows(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState) (map[int][]schemas.HostRow, error) {
	cached, err := s.core.Jobs.Hosts(ctx, st.ID)
	if err != nil {
		return nil, err
	}
	byUnit := make(map[[2]int]schemas.HostRow, len(cached))
	for _, r := range cached {
		byUnit[[2]int{r.Step, r.Index}] = r
	}
	out := make(map[int][]schemas.HostRow, len(st.Steps))
	for i, ss := range st.Steps {
		rows := make([]schemas.HostRow, len(ss.Hosts.Status))
		var lagging []int
		for j, status := range ss.Hosts.Status {
			r, ok := byUnit[[2]int{i, j}]
			if !ok || r.Status != status {
				since := st.At(ss.Hosts.Since[j])
				r = schemas.HostRow{HostResult: schemas.HostResult{Step: i, Index: j, Status: status, Attempt: ss.Hosts.AttemptOf(j)}, Since: since}
				if j < len(spec.Steps[i].Targets) {
					r.Host = spec.Steps[i].Targets[j]
				}
				switch {
				case status == schemas.HostRunning:
					r.StartedAt = since
				case status.Final():
					r.EndedAt = since
					if res, ok := st.Result(i, "", j); ok && res.Status == status && res.Attempt == r.Attempt {
						r.HostResult = res.WithoutLog() // a small job's, kept in its state
					} else {
						lagging = append(lagging, j)
					}
				}
			}
			rows[j] = r
		}
		if len(lagging) > 0 {
			stored, err := s.core.Jobs.Results(ctx, st.ID, i, "", lagging)
			if err != nil {
				return nil, err
			}
			for _, j := range lagging {
				if res, ok := stored[j]; ok && res.Status == rows[j].Status && res.Attempt == ss.Hosts.AttemptOf(j) {
					rows[j].HostResult = res
				}
			}
		}
		out[i] = rows
	}
	return out, nil
}

// bkHostResultOf is one target host's result; for a file step only its
// targets are listed, as bk-job does.
func bkHostResultOf(r schemas.HostRow, hosts *bkHostIndex, file bool) bkHostResult {
	status, code := bkHostCodes(r, file)
	out := bkHostResult{bkHostRef: hosts.ref(r.Host), Status: status, ErrorCode: code,
		StartTime: bkMillis(r.StartedAt), EndTime: bkMillis(r.EndedAt), TotalTime: bkTotal(r.StartedAt, r.EndedAt)}
	if r.ExitCode != nil {
		out.ExitCode = *r.ExitCode
	}
	return out
}

// bkListRequest is get_job_instance_list's parameters.
type bkListRequest struct {
	bkCommon
	CreateTimeStart bkInt  `json:"create_time_start"`
	CreateTimeEnd   bkInt  `json:"create_time_end"`
	JobInstanceID   bkInt  `json:"job_instance_id"`
	JobCronID       bkInt  `json:"job_cron_id"`
	Operator        string `json:"operator"`
	Name            string `json:"name"`
	LaunchMode      bkInt  `json:"launch_mode"`
	Type            bkInt  `json:"type"`
	Status          bkInt  `json:"status"`
	IP              string `json:"ip"`
	Start           bkInt  `json:"start"`
	Length          bkInt  `json:"length"`
}

// bkListItem is one job of the list. It carries the key names of the
// doc's example (id, task_status, task_type), of its table (status, type)
// and of bk-job's code (job_instance_id), with the same values.
type bkListItem struct {
	BizID         *int64 `json:"bk_biz_id,omitempty"` // only for bk_biz_id requests
	ScopeType     string `json:"bk_scope_type"`
	ScopeID       string `json:"bk_scope_id"`
	ID            int64  `json:"id"`
	JobInstanceID int64  `json:"job_instance_id"`
	Name          string `json:"name"`
	Operator      string `json:"operator"`
	CreateTime    *int64 `json:"create_time"`
	StartTime     *int64 `json:"start_time"`
	EndTime       *int64 `json:"end_time"`
	TotalTime     *int64 `json:"total_time"`
	LaunchMode    int    `json:"launch_mode"`
	Status        int    `json:"status"`
	TaskStatus    int    `json:"task_status"`
	Type          int    `json:"type"`
	TaskType      int    `json:"task_type"`
}

type bkListData struct {
	Data   []bkListItem `json:"data"`
	Start  int          `json:"start"`
	Length int          `json:"length"`
	Total  int          `json:"total"`
}

// bkListFilter is a validated list query.
type bkListFilter struct {
	scope              schemas.Scope
	from, to           time.Time
	operator, name, ip string
	status, taskType   int // -1: any
	none               bool
	ipHosts            []schemas.Host
}

func (s *Surface) bkListQuery(req *bkListRequest, v *bkInvalid) bkListFilter {
	f := bkListFilter{scope: req.scope(v), operator: strings.TrimSpace(req.Operator), name: strings.TrimSpace(req.Name),
		status: -1, taskType: -1}
	for _, t := range []struct {
		field string
		n     bkInt
		to    *time.Time
	}{{"create_time_start", req.CreateTimeStart, &f.from}, {"create_time_end", req.CreateTimeEnd, &f.to}} {
		switch {
		case !t.n.Set:
			v.add(t.field, "required (Unix time in milliseconds)")
		case t.n.V < 0:
			v.add(t.field, "must not be negative")
		default:
			*t.to = time.UnixMilli(t.n.V)
		}
	}
	if req.CreateTimeStart.Set && req.CreateTimeEnd.Set {
		switch {
		case f.to.Before(f.from):
			v.addCode(bkCodeIllegalParam, "create_time_start", "after create_time_end")
		case f.to.Sub(f.from) > bkMaxListSpan:
			v.addCode(bkCodeTimeSpanTooLong, "create_time_end", "the creation-time window must be at most 30 days")
		}
	}
	if n := req.Status; n.Set {
		if n.V < 1 || n.V > 15 {
			v.add("status", "unknown status %d", n.V)
		}
		f.status = int(n.V)
	}
	if n := req.Type; n.Set {
		if n.V < 0 || n.V > 2 {
			v.add("type", "want 0 (job plan), 1 (script) or 2 (file transfer), got %d", n.V)
		}
		f.taskType = int(n.V)
	}
	if n := req.LaunchMode; n.Set {
		if n.V < 1 || n.V > 3 {
			v.add("launch_mode", "want 1 (web), 2 (API) or 3 (cron), got %d", n.V)
		}
		f.none = f.none || n.V != bkLaunchModeAPI // every fleetjob job is started through an API
	}
	if req.JobCronID.Set {
		f.none = true // fleetjob has no cron jobs
	}
	if ip := strings.TrimSpace(req.IP); ip != "" {
		h := schemas.Host{IP: ip}
		if err := h.Validate(); err != nil {
			v.add("ip", "%v", err)
		}
		f.ip = h.IP
		f.ipHosts = []schemas.Host{h}
		if s.core.Agents != nil {
			for _, a := range s.core.Agents.All() {
				if a.IP == h.IP && a.CloudID != 0 {
					f.ipHosts = append(f.ipHosts, a.Host())
				}
			}
		}
	}
	return f
}

func (s *Surface) bkGetJobInstanceList(c echo.Context) error {
	var req bkListRequest
	if _, err := s.bkBind(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context() // after authentication: it carries the principal
	var v bkInvalid
	f := s.bkListQuery(&req, &v)
	start, length := int(req.Start.V), bkDefaultListLength
	if req.Start.Set && (req.Start.V < 0 || req.Start.V > math.MaxInt32) {
		v.add("start", "must not be negative")
	}
	if req.Length.Set {
		if req.Length.V < 1 || req.Length.V > bkMaxListLength {
			v.add("length", "want 1 to %d, got %d", bkMaxListLength, req.Length.V)
		}
		length = int(req.Length.V)
	}
	if req.JobInstanceID.Set && req.JobInstanceID.V < 1 {
		v.add("job_instance_id", "must be at least 1")
	}
	if err := v.err(); err != nil {
		return err
	}
	var items []bkListItem
	var total int
	var err error
	if req.JobInstanceID.Set {
		items, err = s.bkListOne(ctx, req.JobInstanceID.V, f.scope)
		total = len(items)
		items = items[min(start, total):]
	} else {
		items, total, err = s.bkListScan(ctx, f, start, length)
	}
	if err != nil {
		return err
	}
	if items == nil {
		items = []bkListItem{}
	}
	for i := range items {
		items[i].BizID = req.legacyBizID()
	}
	return bkOK(c, "success", bkListData{Data: items, Start: start, Length: length, Total: total})
}

// bkListOne answers a list query by job_instance_id, which ignores every
// other filter but the scope.
func (s *Surface) bkListOne(ctx context.Context, id int64, sc schemas.Scope) ([]bkListItem, error) {
	sum, err := s.core.Jobs.Job(ctx, id)
	if errors.Is(err, schemas.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	facts, err := s.core.Search.Facts(ctx, []int64{id})
	if err != nil {
		return nil, err
	}
	if fa, ok := facts[id]; !ok || fa.Scope == nil || *fa.Scope != sc {
		return nil, nil
	}
	return []bkListItem{bkListItemOf(sum, sc, facts[id])}, nil
}

// bkListScan walks the jobs from the newest id down, keeping those of the
// scope created inside the window that pass the filters; it answers the
// page [start, start+length) and the total. Ids follow submission order
// and a job's creation time is when a worker took it, so once a job was
// created more than bkListCreationSlack before the window, every older id
// is outside it too and the walk stops.
func (s *Surface) bkListScan(ctx context.Context, f bkListFilter, start, length int) ([]bkListItem, int, error) {
	if f.none {
		return nil, 0, nil
	}
	var items []bkListItem
	total := 0
	below := int64(math.MaxInt64)
	for below > 1 {
		sums, next, err := s.core.Search.JobsBefore(ctx, below, bkListScanPage)
		if err != nil {
			return nil, 0, err
		}
		below = next
		done := next <= 1
		var cands []schemas.JobSummary
		for _, sum := range sums {
			if sum.CreatedAt.Before(f.from.Add(-bkListCreationSlack)) {
				done = true
			}
			if sum.CreatedAt.Before(f.from) || sum.CreatedAt.After(f.to) || !f.summaryMatches(sum) {
				continue
			}
			cands = append(cands, sum)
		}
		if len(cands) > 0 {
			ids := make([]int64, len(cands))
			for i, sum := range cands {
				ids[i] = sum.ID
			}
			facts, err := s.core.Search.Facts(ctx, ids)
			if err != nil {
				return nil, 0, err
			}
			onHost := map[int64]bool{}
			if f.ip != "" {
				if onHost, err = s.core.Search.JobsOnHosts(ctx, f.ipHosts, ids); err != nil {
					return nil, 0, err
				}
			}
			for _, sum := range cands {
				fa, ok := facts[sum.ID]
				if !ok || fa.Scope == nil || *fa.Scope != f.scope || (f.ip != "" && !onHost[sum.ID]) {
					continue
				}
				if f.taskType >= 0 && bkTaskTypeOf(fa) != f.taskType {
					continue
				}
				if total >= start && total < start+length {
					items = append(items, bkListItemOf(sum, f.scope, fa))
				}
				total++
			}
		}
		if done || next == 0 {
			break
		}
	}
	return items, total, nil
}

// summaryMatches applies the filters the summary alone answers.
func (f bkListFilter) summaryMatches(sum schemas.JobSummary) bool {
	return (f.status < 0 || BKRunStatus(sum.Status) == f.status) &&
		(f.operator == "" || sum.Owner == f.operator) &&
		(f.name == "" || strings.Contains(sum.Name, f.name))
}

// bkTaskTypeOf is a job's BlueKing task type: as recorded by this surface,
// else one script step is a quick script, one file step a quick transfer,
// anything else a job plan.
func bkTaskTypeOf(fa api.JobFacts) int {
	if t, err := strconv.Atoi(fa.Extra[bkExtraTaskType]); err == nil {
		return t
	}
	if len(fa.StepTypes) == 1 {
		if fa.StepTypes[0] == schemas.StepFile {
			return bkTaskFile
		}
		return bkTaskScript
	}
	return bkTaskPlan
}

func bkListItemOf(sum schemas.JobSummary, sc schemas.Scope, fa api.JobFacts) bkListItem {
	status, typ := BKRunStatus(sum.Status), bkTaskTypeOf(fa)
	return bkListItem{
		ScopeType: sc.Type, ScopeID: sc.ID, ID: sum.ID, JobInstanceID: sum.ID, Name: sum.Name, Operator: sum.Owner,
		CreateTime: bkMillis(sum.CreatedAt), StartTime: bkMillis(sum.StartedAt), EndTime: bkMillis(sum.EndedAt),
		TotalTime: bkTotal(sum.StartedAt, sum.EndedAt), LaunchMode: bkLaunchModeAPI,
		Status: status, TaskStatus: status, Type: typ, TaskType: typ,
	}
}
