package schemas

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MessageVersion is the version every message below carries in "v".
const MessageVersion = 1

// SubmitCommand asks for a new job. Its JOBS stream sequence becomes the job id.
type SubmitCommand struct {
	V           int       `json:"v"`
	Spec        JobSpec   `json:"spec"`
	SubmittedAt time.Time `json:"submitted_at"`
}

// StopCommand asks to stop a job.
type StopCommand struct {
	V      int    `json:"v"`
	JobID  int64  `json:"job_id"`
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Step operations (BlueKing's operate_step_instance, in words).
const (
	OpConfirm     = "confirm"      // go on with the next batch of a held step
	OpSkip        = "skip"         // end the step as skipped and go on
	OpRetryFailed = "retry_failed" // run the step's failed hosts again
	OpRetryAll    = "retry_all"    // run all of the step's hosts again
	OpIgnoreError = "ignore_error" // accept the failed step and go on
)

// StepOps lists the operations OpCommand takes.
var StepOps = []string{OpConfirm, OpSkip, OpRetryFailed, OpRetryAll, OpIgnoreError}

// OpCommand operates on the current step of a job.
type OpCommand struct {
	V     int    `json:"v"`
	JobID int64  `json:"job_id"`
	Step  int    `json:"step"`
	Op    string `json:"op"`
	By    string `json:"by,omitempty"`
}

// ExecID names one execution of one host in one step: job.step.host.attempt.
// Agents journal it so a redelivered task is never silently run twice.
func ExecID(job int64, step, host, attempt int) string {
	return fmt.Sprintf("%d.%d.%d.%d", job, step, host, attempt)
}

// PhaseUpload marks tasks, reports and results of a file step's source
// hosts (their upload units) rather than of its targets.
const PhaseUpload = "upload"

// UnitToken is how a unit appears in exec ids, log subjects and KV keys:
// the target index, or "u" and the upload unit's index.
func UnitToken(phase string, idx int) string {
	if phase == PhaseUpload {
		return "u" + strconv.Itoa(idx)
	}
	return strconv.Itoa(idx)
}

// ParseUnitToken reads UnitToken's phase and index back.
func ParseUnitToken(tok string) (phase string, idx int, ok bool) {
	if u, up := strings.CutPrefix(tok, "u"); up {
		phase, tok = PhaseUpload, u
	}
	idx, err := strconv.Atoi(tok)
	return phase, idx, err == nil
}

// UnitExecID is ExecID for a target or an upload unit.
func UnitExecID(job int64, step int, phase string, idx, attempt int) string {
	return fmt.Sprintf("%d.%d.%s.%d", job, step, UnitToken(phase, idx), attempt)
}

// Task is what a worker sends to one agent: run this on your host.
type Task struct {
	V       int    `json:"v"`
	ExecID  string `json:"exec_id"`
	JobID   int64  `json:"job_id"`
	Step    int    `json:"step"`
	Host    int    `json:"host"`
	Attempt int    `json:"attempt"`
	Target  Host   `json:"target"`
	Kind    string `json:"kind"`
	// Phase is PhaseUpload for a file step's source host; Host is then the
	// upload unit's index.
	Phase    string        `json:"phase,omitempty"`
	Script   *Script       `json:"script,omitempty"`
	Upload   *UploadTask   `json:"upload,omitempty"`
	Download *DownloadTask `json:"download,omitempty"`
	// Timeout is in seconds.
	Timeout int `json:"timeout"`
	// NotAfter is the latest time the agent may start the task; after it the
	// worker has already given the host up as agent_offline.
	NotAfter      time.Time `json:"not_after"`
	CorrelationID string    `json:"correlation_id,omitempty"`
	// InlineLog lets the agent send a small output in its finished report
	// (Report.Log) instead of a LOGS message: set for every script task
	// (JobSpec.InlineLogLimit). The result keeps it: a small job's in its
	// state, a larger job's in its result segment.
	InlineLog bool `json:"inline_log,omitempty"`
	// InlineMax, when above 0, bounds the bytes of that output below
	// MaxInlineLog: a larger job's results share segments, so theirs are
	// smaller (MaxSegmentInlineLog). An agent that does not know it sends
	// up to MaxInlineLog, which the worker keeps all the same.
	InlineMax int `json:"inline_max,omitempty"`
}

// Task kinds besides StepScript.
const (
	TaskUpload   = "upload"
	TaskDownload = "download"
)

// UploadTask asks a source agent to put files into the artifacts store.
type UploadTask struct {
	Paths []string `json:"paths"`
	// Prefix is the object name prefix: "job/<id>/<step>/<unit>".
	Prefix  string `json:"prefix"`
	Account string `json:"account,omitempty"`
	LimitMB int    `json:"limit_mb,omitempty"`
	Strict  bool   `json:"strict"`
}

// DownloadTask asks a target agent to fetch files into a directory.
type DownloadTask struct {
	Files       []FileEntry `json:"files"`
	Destination string      `json:"destination"`
	// MustExist refuses to create a missing destination directory.
	MustExist bool   `json:"must_exist,omitempty"`
	Mode      string `json:"mode,omitempty"`
	Owner     string `json:"owner,omitempty"`
	LimitMB   int    `json:"limit_mb,omitempty"`
}

// Report kinds travelling on RESULTS.
const (
	ReportStarted  = "started"  // an agent started the execution
	ReportFinished = "finished" // an agent (or the sweeper) ended it
	ReportKick     = "kick"     // the sweeper asks a worker to look at the job again
)

// Report is an agent's (or the sweeper's) word about one execution.
type Report struct {
	V         int        `json:"v"`
	Kind      string     `json:"kind"`
	JobID     int64      `json:"job_id"`
	Step      int        `json:"step"`
	Host      int        `json:"host"`
	Attempt   int        `json:"attempt"`
	ExecID    string     `json:"exec_id,omitempty"`
	AgentID   string     `json:"agent_id,omitempty"`
	Status    HostStatus `json:"status"`
	ExitCode  *int       `json:"exit_code,omitempty"`
	StartedAt time.Time  `json:"started_at,omitzero"`
	EndedAt   time.Time  `json:"ended_at,omitzero"`
	Lines     int        `json:"lines"`
	Error     string     `json:"error,omitempty"`
	// Phase and Files belong to upload units: the files they stored.
	Phase string      `json:"phase,omitempty"`
	Files []FileEntry `json:"files,omitempty"`
	// Log is the whole output of a task asked for it (Task.InlineLog) when
	// it fit in one chunk of at most MaxInlineLog bytes that was not sent
	// yet: its Lines lines joined by "\n", masked, exactly what that LOGS
	// chunk would have carried; nothing of the execution is in LOGS then.
	// Nil when the log is in LOGS; "" is a log of no lines, or of one
	// empty line (Lines tells).
	Log *string `json:"log,omitempty"`
}

// MaxInlineLog bounds the bytes of a log that rides in its report
// (Report.Log) and then in its host result (HostResult.Log).
const MaxInlineLog = 1 << 10

// MaxSegmentInlineLog bounds it for a larger job, whose results live in
// segments of ResultSegment units: a segment's logs take at most 64 KiB
// beside its ~60 KiB of results (and its earlier attempts' logs, kept when
// a retry supersedes them), so that rewriting a segment as its hosts
// finish stays cheap. A command's short answer ("ok", a version, a
// count) fits; a longer output goes to LOGS as before.
const MaxSegmentInlineLog = 256

// InlineLimit is the bound of a task's inline log: MaxInlineLog, or
// InlineMax when the task sets a smaller one.
func (t *Task) InlineLimit() int {
	if t.InlineMax > 0 && t.InlineMax < MaxInlineLog {
		return t.InlineMax
	}
	return MaxInlineLog
}

// InlineLines splits an inline log of n lines into its lines, as a LOGS
// chunk's body is split.
func InlineLines(log string, n int) []string {
	if n <= 0 {
		return []string{}
	}
	return strings.Split(log, "\n")
}

// KillRequest asks an agent to kill executions' process groups.
type KillRequest struct {
	V       int      `json:"v"`
	JobID   int64    `json:"job_id"`
	ExecIDs []string `json:"exec_ids"`
}

// KillReply is an agent's terminate acknowledgement: which executions it
// killed and which it did not know (not started, or already ended).
type KillReply struct {
	Killed  []string `json:"killed"`
	Unknown []string `json:"unknown"`
}

// AgentInfo is an agent's registry entry in the agents bucket.
type AgentInfo struct {
	ID       string            `json:"id"`
	IP       string            `json:"ip"`
	CloudID  int64             `json:"cloud_id"`
	Hostname string            `json:"hostname"`
	Labels   map[string]string `json:"labels,omitempty"`
	Version  string            `json:"version"`
	Slots    int               `json:"slots"`
	// HostID is the host's numeric id in a CMDB (BlueKing's bk_host_id), when
	// the agent was given one.
	HostID    int64     `json:"host_id,omitempty"`
	StartedAt time.Time `json:"started_at"`
	LastSeen  time.Time `json:"last_seen"`
	// Stopping is set by an agent that shuts down cleanly.
	Stopping bool `json:"stopping,omitempty"`
	// Pool is the task pool that serves the agent: empty for a real agent
	// (DefaultPool), a simulator's pool for a simulated one.
	Pool string `json:"pool,omitempty"`
	// Simulated marks identities of a load simulator (agent --simulate).
	Simulated bool `json:"simulated,omitempty"`
}

// TaskPool is the pool the agent's tasks are published to.
func (a AgentInfo) TaskPool() string {
	if a.Pool == "" {
		return DefaultPool
	}
	return a.Pool
}

// Host returns the host the agent serves.
func (a AgentInfo) Host() Host { return Host{CloudID: a.CloudID, IP: a.IP} }

// Online reports whether the agent has been heard from within ttl.
func (a AgentInfo) Online(now time.Time, ttl time.Duration) bool {
	return !a.Stopping && now.Sub(a.LastSeen) <= ttl
}

// Log chunk headers on LOGS messages.
const (
	HdrFirstLine = "Fj-First-Line" // index of the chunk's first line
	HdrLineCount = "Fj-Lines"      // lines in the chunk
	HdrFinal     = "Fj-Final"      // "1" on the last chunk of a log
)

// DeadLetter records a message that failed for good: a permanent error,
// or its last allowed delivery. The message itself is then removed.
type DeadLetter struct {
	Stream     string    `json:"stream"`
	Seq        uint64    `json:"seq"`
	Subject    string    `json:"subject"`
	Data       string    `json:"data"` // the message body, cut at 64 KiB
	Deliveries uint64    `json:"deliveries"`
	Reason     string    `json:"reason"`
	JobID      int64     `json:"job_id,omitempty"`
	At         time.Time `json:"at"`
}

// CallbackRecord is the delivery history of one job's callback, kept in
// the jobs bucket under KeyCallback.
type CallbackRecord struct {
	// Event is the job.finished event the attempts answer; a job finishes
	// again after an operator retries it.
	Event     string            `json:"event"`
	URL       string            `json:"url"`
	Status    int               `json:"status"`
	Delivered bool              `json:"delivered"`
	GaveUp    bool              `json:"gave_up,omitempty"`
	Attempts  []CallbackAttempt `json:"attempts"`
}

// CallbackAttempt is one delivery try.
type CallbackAttempt struct {
	At          time.Time `json:"at"`
	ContentType string    `json:"content_type"`
	HTTPStatus  int       `json:"http_status,omitempty"`
	Error       string    `json:"error,omitempty"`
	Millis      int64     `json:"ms"`
}
