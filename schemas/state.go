package schemas

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// HostStatus is a host's state within one step. It is stored as one byte per
// host so a job of 10,000 hosts keeps a small state record.
type HostStatus byte

// Host statuses. Every value from HostSuccess on is final.
const (
	HostPending      HostStatus = iota // not yet dispatched
	HostWaitingAgent                   // no online agent serves the host yet
	HostDispatched                     // task published to the agent
	HostRunning                        // the agent started it
	HostSuccess
	HostFailed
	HostTimeout
	HostStopped
	HostAgentOffline
	HostInterrupted // the agent died or restarted while it ran
	HostSkipped
	hostStatusCount
)

var hostStatusNames = [...]string{
	HostPending:      "pending",
	HostWaitingAgent: "waiting_agent",
	HostDispatched:   "dispatched",
	HostRunning:      "running",
	HostSuccess:      "success",
	HostFailed:       "failed",
	HostTimeout:      "timeout",
	HostStopped:      "stopped",
	HostAgentOffline: "agent_offline",
	HostInterrupted:  "interrupted",
	HostSkipped:      "skipped",
}

func (s HostStatus) String() string {
	if int(s) < len(hostStatusNames) {
		return hostStatusNames[s]
	}
	return fmt.Sprintf("unknown(%d)", byte(s))
}

// Final reports whether the host is done with its step.
func (s HostStatus) Final() bool { return s >= HostSuccess }

// MarshalJSON writes the status word.
func (s HostStatus) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// UnmarshalJSON reads a status word.
func (s *HostStatus) UnmarshalJSON(b []byte) error {
	var w string
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	v, ok := ParseHostStatus(w)
	if !ok {
		return fmt.Errorf("unknown host status %q", w)
	}
	*s = v
	return nil
}

// ParseHostStatus maps a status word back to its value.
func ParseHostStatus(w string) (HostStatus, bool) {
	for i, n := range hostStatusNames {
		if n == w {
			return HostStatus(i), true
		}
	}
	return 0, false
}

// HostStatusNames lists every host status word in order.
func HostStatusNames() []string { return append([]string(nil), hostStatusNames[:]...) }

// Job statuses (native words).
const (
	JobWaiting = "waiting"
	JobRunning = "running"
	// JobWaitingUser: a rolling step paused on a failure or waits for
	// confirmation before its next batch.
	JobWaitingUser = "waiting_user"
	JobSuccess     = "success"
	JobFailed      = "failed"
	JobPartial     = "partial"
	JobStopping    = "stopping"
	JobStopped     = "stopped"
)

// JobFinal reports whether a job status is terminal.
func JobFinal(s string) bool {
	switch s {
	case JobSuccess, JobFailed, JobPartial, JobStopped:
		return true
	}
	return false
}

// JobStatuses lists every job status word.
var JobStatuses = []string{JobWaiting, JobRunning, JobWaitingUser, JobSuccess, JobFailed, JobPartial, JobStopping, JobStopped}

// Step statuses besides the job words: a step whose failure was ignored,
// and one skipped by an operator.
const (
	StepIgnored = "ignored"
	StepSkipped = "skipped"
)

// HostTable holds each host's status and the second (since the job was
// created) it entered that status. It encodes compactly as base64.
type HostTable struct {
	Status []HostStatus
	Since  []uint32
	// Attempt counts executions from 1; nil means every host is on its first.
	Attempt []uint8
}

// NewHostTable returns a table of n pending hosts.
func NewHostTable(n int) HostTable {
	return HostTable{Status: make([]HostStatus, n), Since: make([]uint32, n)}
}

// AttemptOf returns host i's current attempt (1 for the first).
func (t HostTable) AttemptOf(i int) int {
	if i < len(t.Attempt) && t.Attempt[i] > 0 {
		return int(t.Attempt[i])
	}
	return 1
}

// Retry puts host i back to pending for its next attempt.
func (t *HostTable) Retry(i int, sec uint32) {
	if t.Attempt == nil {
		t.Attempt = make([]uint8, len(t.Status))
	}
	next := t.AttemptOf(i) + 1
	if next > 255 {
		next = 255
	}
	t.Attempt[i] = uint8(next)
	t.Set(i, HostPending, sec)
}

// Set moves host i to st at second sec.
func (t HostTable) Set(i int, st HostStatus, sec uint32) {
	t.Status[i] = st
	t.Since[i] = sec
}

// Counts returns how many hosts are in each status, by word; zero counts are left out.
func (t HostTable) Counts() map[string]int {
	var n [hostStatusCount]int
	for _, s := range t.Status {
		if s < hostStatusCount {
			n[s]++
		}
	}
	out := make(map[string]int)
	for i, c := range n {
		if c > 0 {
			out[hostStatusNames[i]] = c
		}
	}
	return out
}

type hostTableJSON struct {
	Status  string `json:"status"`
	Since   string `json:"since"`
	Attempt string `json:"attempt,omitempty"`
}

// IsZero reports an absent table (omitzero leaves it out).
func (t HostTable) IsZero() bool { return t.Status == nil }

// MarshalJSON packs the columns as base64.
func (t HostTable) MarshalJSON() ([]byte, error) {
	st := make([]byte, len(t.Status))
	for i, s := range t.Status {
		st[i] = byte(s)
	}
	since := make([]byte, 4*len(t.Since))
	for i, s := range t.Since {
		binary.LittleEndian.PutUint32(since[4*i:], s)
	}
	j := hostTableJSON{
		Status: base64.StdEncoding.EncodeToString(st),
		Since:  base64.StdEncoding.EncodeToString(since),
	}
	if t.Attempt != nil {
		j.Attempt = base64.StdEncoding.EncodeToString(t.Attempt)
	}
	return json.Marshal(j)
}

// UnmarshalJSON unpacks what MarshalJSON wrote.
func (t *HostTable) UnmarshalJSON(b []byte) error {
	var j hostTableJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	st, err := base64.StdEncoding.DecodeString(j.Status)
	if err != nil {
		return fmt.Errorf("host table status: %w", err)
	}
	since, err := base64.StdEncoding.DecodeString(j.Since)
	if err != nil || len(since) != 4*len(st) {
		return fmt.Errorf("host table since: bad length or encoding")
	}
	t.Attempt = nil
	if j.Attempt != "" {
		att, err := base64.StdEncoding.DecodeString(j.Attempt)
		if err != nil || len(att) != len(st) {
			return fmt.Errorf("host table attempt: bad length or encoding")
		}
		t.Attempt = att
	}
	t.Status = make([]HostStatus, len(st))
	t.Since = make([]uint32, len(st))
	for i := range st {
		t.Status[i] = HostStatus(st[i])
		t.Since[i] = binary.LittleEndian.Uint32(since[4*i:])
	}
	return nil
}

// JobState is the job's live record in the jobs KV bucket. Its revision is
// the fencing token: every writer updates it by compare-and-set.
type JobState struct {
	V         int         `json:"v"`
	ID        int64       `json:"id"`
	Status    string      `json:"status"`
	Step      int         `json:"step"`
	Steps     []StepState `json:"steps"`
	CreatedAt time.Time   `json:"created_at"`
	StartedAt time.Time   `json:"started_at,omitzero"`
	EndedAt   time.Time   `json:"ended_at,omitzero"`
	UpdatedAt time.Time   `json:"updated_at"`
	// StopAt is when a stop was requested; zero when none was.
	StopAt time.Time `json:"stop_at,omitzero"`
	StopBy string    `json:"stop_by,omitempty"`
	Reason string    `json:"reason,omitempty"`
	// Results holds the final host results of a small job (see
	// JobSpec.InlineResults), committed with the state; a larger job keeps
	// each in its own key (KeyHostResult). A small job's running units are
	// here too, with the start and agent their started report gave.
	Results []HostResult `json:"results,omitempty"`
}

// PutResults records host results in the state, replacing an
// earlier one of the same unit (an earlier attempt).
func (st *JobState) PutResults(rs []HostResult) {
	for _, r := range rs {
		i := slices.IndexFunc(st.Results, func(o HostResult) bool {
			return o.Step == r.Step && o.Phase == r.Phase && o.Index == r.Index
		})
		if i >= 0 {
			st.Results[i] = r
		} else {
			st.Results = append(st.Results, r)
		}
	}
}

// Result returns a unit's result from Results.
func (st *JobState) Result(step int, phase string, idx int) (HostResult, bool) {
	for _, r := range st.Results {
		if r.Step == step && r.Phase == phase && r.Index == idx {
			return r, true
		}
	}
	return HostResult{}, false
}

// StepState is one step's progress.
type StepState struct {
	Status    string    `json:"status"`
	StartedAt time.Time `json:"started_at,omitzero"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	Hosts     HostTable `json:"hosts"`
	// Batches holds each rolling batch's end (exclusive) host index; a step
	// without rolling has one batch. Batch is the one running now.
	Batches []int `json:"batches,omitempty"`
	Batch   int   `json:"batch"`
	// Hold says why the step waits for a person: "failure" or "confirm".
	Hold string `json:"hold,omitempty"`
	// Aborted is set when the step gave up on its remaining hosts (its
	// maximum failure percentage was passed); it ends failed.
	Aborted bool `json:"aborted,omitempty"`
	// A file step first runs its upload units (source hosts), one per
	// source and host, then sends Manifest to its targets.
	Phase    string      `json:"phase,omitempty"`
	Uploads  HostTable   `json:"uploads,omitzero"`
	Manifest []FileEntry `json:"manifest,omitempty"`
}

// Holds of a rolling step.
const (
	HoldFailure = "failure"
	HoldConfirm = "confirm"
)

// BatchEnd is the end (exclusive) of the hosts the step may run now.
func (s *StepState) BatchEnd() int {
	if len(s.Batches) == 0 {
		return len(s.Hosts.Status)
	}
	return s.Batches[min(s.Batch, len(s.Batches)-1)]
}

// Sec converts a time into the HostTable's clock: seconds since creation.
func (j *JobState) Sec(t time.Time) uint32 {
	d := t.Sub(j.CreatedAt)
	if d < 0 {
		return 0
	}
	return uint32(d / time.Second)
}

// At converts a HostTable second back into a time.
func (j *JobState) At(sec uint32) time.Time {
	return j.CreatedAt.Add(time.Duration(sec) * time.Second)
}

// HostResult is one host's detailed outcome within a step, stored beside
// the job state (one KV key per host) and cached in Redis.
type HostResult struct {
	Step  int `json:"step"`
	Index int `json:"index"`
	// Phase is PhaseUpload for a file step's source host.
	Phase     string     `json:"phase,omitempty"`
	Host      Host       `json:"host"`
	AgentID   string     `json:"agent_id,omitempty"`
	Status    HostStatus `json:"status"`
	ExitCode  *int       `json:"exit_code,omitempty"`
	Attempt   int        `json:"attempt"`
	StartedAt time.Time  `json:"started_at,omitzero"`
	EndedAt   time.Time  `json:"ended_at,omitzero"`
	Lines     int        `json:"lines"`
	Error     string     `json:"error,omitempty"`
	// Log is the attempt's whole output when it rode in its finished
	// report (Report.Log), kept with the stored result: in a small job's
	// state (JobSpec.InlineResults), in a larger job's result segment
	// (JobSpec.InlineLogLimit); the log reader serves it. Host rows,
	// events and API answers carry results WithoutLog.
	Log *string `json:"log,omitempty"`
}

// WithoutLog returns r without its inline log, as host rows, events and
// API answers carry it: a log is read through the log reader.
func (r HostResult) WithoutLog() HostResult {
	r.Log = nil
	return r
}

// DurationMS is the run time in milliseconds, or 0 when it has not ended.
func (r HostResult) DurationMS() int64 {
	if r.StartedAt.IsZero() || r.EndedAt.IsZero() {
		return 0
	}
	return r.EndedAt.Sub(r.StartedAt).Milliseconds()
}

// JobSummary is the read model of a job: what the status cache holds and
// what list and detail reads return.
//
// TotalHosts and Counts are about hosts, not host-steps: TotalHosts is the
// number of distinct target hosts of the job over all its steps (a host
// several steps target counts once; a file step's source hosts are not
// targets). Counts counts those hosts by status word, each host once, with
// its latest status: its status in the current step or, for a host the
// current step does not target, in the last earlier step that does; a host
// that only later steps target counts with its status in the first of them
// (pending, or skipped once the job has ended). Counts adds up to
// TotalHosts; statuses no host has are left out. Each step's own Hosts and
// Counts (StepSummary) count that step's targets in that step.
type JobSummary struct {
	ID            int64  `json:"id"`
	Name          string `json:"name"`
	Status        string `json:"status"`
	Owner         string `json:"owner,omitempty"`
	Source        string `json:"source,omitempty"`
	Surface       string `json:"surface,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	// Scope is the job's scope ("biz:2"), empty for a job of none.
	Scope       string         `json:"scope,omitempty"`
	CreatedAt   time.Time      `json:"created_at"`
	StartedAt   time.Time      `json:"started_at,omitzero"`
	EndedAt     time.Time      `json:"ended_at,omitzero"`
	UpdatedAt   time.Time      `json:"updated_at"`
	CurrentStep int            `json:"current_step"`
	TotalHosts  int            `json:"total_hosts"`
	Counts      map[string]int `json:"counts"`
	Steps       []StepSummary  `json:"steps"`
	Reason      string         `json:"reason,omitempty"`
	Warnings    []RiskFinding  `json:"warnings,omitempty"`
}

// StepSummary is one step in a JobSummary: Hosts is the number of its
// targets, Counts counts them by their status in this step.
type StepSummary struct {
	Name      string         `json:"name,omitempty"`
	Type      string         `json:"type"`
	Status    string         `json:"status"`
	Hold      string         `json:"hold,omitempty"`
	Batch     int            `json:"batch,omitempty"`   // 1-based, for rolling steps
	Batches   int            `json:"batches,omitempty"` // rolling batches in all
	StartedAt time.Time      `json:"started_at,omitzero"`
	EndedAt   time.Time      `json:"ended_at,omitzero"`
	Hosts     int            `json:"hosts"`
	Counts    map[string]int `json:"counts"`
}

// Summarize builds the read model from the stored spec and state.
func Summarize(spec *JobSpec, st *JobState) JobSummary {
	s := JobSummary{
		ID: st.ID, Name: spec.Name, Status: st.Status, Owner: spec.Owner,
		Source: spec.Source, Surface: spec.Surface, CorrelationID: spec.CorrelationID,
		CreatedAt: st.CreatedAt, StartedAt: st.StartedAt, EndedAt: st.EndedAt,
		UpdatedAt: st.UpdatedAt, CurrentStep: st.Step, Reason: st.Reason,
		Counts: map[string]int{}, Warnings: spec.Warnings,
	}
	if spec.Scope != nil {
		s.Scope = spec.Scope.String()
	}
	for i, ss := range st.Steps {
		c := ss.Hosts.Counts()
		sum := StepSummary{
			Status: ss.Status, StartedAt: ss.StartedAt, EndedAt: ss.EndedAt,
			Hosts: len(ss.Hosts.Status), Counts: c, Hold: ss.Hold,
		}
		if len(ss.Batches) > 1 {
			sum.Batch, sum.Batches = ss.Batch+1, len(ss.Batches)
		}
		if i < len(spec.Steps) {
			sum.Name, sum.Type = spec.Steps[i].Name, spec.Steps[i].Type
		}
		s.Steps = append(s.Steps, sum)
	}
	s.TotalHosts, s.Counts = hostCounts(spec, st)
	return s
}

// hostCounts counts a job's distinct target hosts by their latest status,
// as JobSummary.Counts describes.
func hostCounts(spec *JobSpec, st *JobState) (int, map[string]int) {
	steps := min(len(spec.Steps), len(st.Steps))
	if steps == 0 {
		return 0, map[string]int{}
	}
	cur := min(max(st.Step, 0), steps-1)
	if sameTargets(spec.Steps[:steps]) {
		// most jobs: every step targets the same hosts, so each host's
		// latest status is its status in the current step
		return len(st.Steps[cur].Hosts.Status), st.Steps[cur].Hosts.Counts()
	}
	// the current step, the earlier ones from the latest, then the later ones
	order := make([]int, 0, steps)
	for i := cur; i >= 0; i-- {
		order = append(order, i)
	}
	for i := cur + 1; i < steps; i++ {
		order = append(order, i)
	}
	seen := map[Host]bool{}
	var latest HostTable
	for _, i := range order {
		status := st.Steps[i].Hosts.Status
		for j, h := range spec.Steps[i].Targets {
			if j < len(status) && !seen[h] {
				seen[h] = true
				latest.Status = append(latest.Status, status[j])
			}
		}
	}
	return len(latest.Status), latest.Counts()
}

// sameTargets reports whether every step targets the same hosts in the
// same order.
func sameTargets(steps []Step) bool {
	for _, s := range steps[1:] {
		if !slices.Equal(s.Targets, steps[0].Targets) {
			return false
		}
	}
	return true
}

// NewJobState is the state of a job that has just been accepted.
func NewJobState(id int64, spec *JobSpec, now time.Time) *JobState {
	st := &JobState{V: MessageVersion, ID: id, Status: JobWaiting, CreatedAt: now, UpdatedAt: now}
	for _, step := range spec.Steps {
		ss := StepState{Status: JobWaiting, Hosts: NewHostTable(len(step.Targets))}
		if step.File != nil {
			ss.Uploads = NewHostTable(len(step.File.UploadUnits()))
		}
		st.Steps = append(st.Steps, ss)
	}
	return st
}

// ReasonNoTerminateAck is the error of a host that a stop ended because its
// agent never confirmed killing the execution (BlueKing: terminate failed).
const ReasonNoTerminateAck = "no terminate acknowledgement from the agent"

// HostRow is one host of a job as the status cache serves it: its result
// so far and since when it has been in its status.
type HostRow struct {
	HostResult
	Since time.Time `json:"since,omitzero"`
}

// LogPage is a range of a log's lines. To is one past the last line
// returned. Complete says the log has ended: no line will be added.
type LogPage struct {
	From     int      `json:"from"`
	To       int      `json:"to"`
	Total    int      `json:"total"`
	Complete bool     `json:"complete"`
	Lines    []string `json:"lines"`
}
