package orchestrator

// This file holds the transaction type: one job's spec and state, the
// moment it is applied at, and the effects it collects (tasks, results,
// cache rows, events, kill requests), with the small helpers every part of
// the state machine uses to read and change a unit's status.

import (
	"strconv"
	"time"

	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// Directory answers which online agent serves a host, whether the
// agents of a host are gone (silent past their TTL while the directory
// could hear them: not merely unseen during a NATS failover), and what an
// agent registered (the host it serves, online or not).
type Directory interface {
	Lookup(h schemas.Host, now time.Time) (schemas.AgentInfo, bool)
	Gone(h schemas.Host, now time.Time) bool
	Agent(id string) (schemas.AgentInfo, bool)
}

// routedTask is a task and the agent (and task pool) it goes to.
type routedTask struct {
	pool, agent string
	task        schemas.Task
}

// agentRef names an agent on its control subject.
type agentRef struct{ pool, id string }

// unit is one thing a step runs on: a target host, or (phase upload) one
// of a file step's upload units on a source host.
type unit struct {
	step, idx int
	phase     string
}

// txn applies reports and deadlines to one job's state. It is pure: it
// decides, and the caller commits (CAS) and then performs the effects it
// collected.
type txn struct {
	spec *schemas.JobSpec
	st   *schemas.JobState
	now  time.Time
	dir  Directory

	changed  bool
	stopped  bool // this txn moved the job to stopping
	tasks    []routedTask
	results  []schemas.HostResult
	touched  map[unit]*schemas.HostRow
	events   []events.Event
	kills    map[agentRef][]string // agent → exec ids
	finished bool
	reopened bool // an operation brought a finished job back
	created  bool // the state is new: nothing of the job is cached yet
	// replaying: the events include every one the record implies, some
	// of them perhaps published already (replayEvents)
	replaying bool

	// superseded are results with an inline log whose unit a retry gave a
	// new attempt: stored apart before the commit (keepSuperseded)
	superseded []schemas.HostResult
}

func newTxn(spec *schemas.JobSpec, st *schemas.JobState, now time.Time, dir Directory) *txn {
	return &txn{spec: spec, st: st, now: now, dir: dir, touched: map[unit]*schemas.HostRow{}}
}

func (t *txn) jobID() string { return strconv.FormatInt(t.st.ID, 10) }

func (t *txn) target(step, host int) schemas.Host { return t.spec.Steps[step].Targets[host] }

// table is the status table of a step's targets or of its upload units.
func (t *txn) table(step int, phase string) *schemas.HostTable {
	if phase == schemas.PhaseUpload {
		return &t.st.Steps[step].Uploads
	}
	return &t.st.Steps[step].Hosts
}

// host is the machine a unit runs on.
func (t *txn) host(u unit) schemas.Host {
	if u.phase == schemas.PhaseUpload {
		return t.spec.Steps[u.step].File.UploadUnits()[u.idx].Host
	}
	return t.target(u.step, u.idx)
}

func (t *txn) execID(u unit) string {
	return schemas.UnitExecID(t.st.ID, u.step, u.phase, u.idx, t.table(u.step, u.phase).AttemptOf(u.idx))
}

// row returns the cache row of a unit, creating it from the table.
func (t *txn) row(u unit) *schemas.HostRow {
	if r, ok := t.touched[u]; ok {
		return r
	}
	r := &schemas.HostRow{}
	r.Step, r.Index, r.Phase, r.Host = u.step, u.idx, u.phase, t.host(u)
	r.Attempt = t.table(u.step, u.phase).AttemptOf(u.idx)
	t.touched[u] = r
	return r
}

// set moves a unit to a new status and records the change.
func (t *txn) set(u unit, s schemas.HostStatus) *schemas.HostRow {
	t.table(u.step, u.phase).Set(u.idx, s, t.st.Sec(t.now))
	t.changed = true
	r := t.row(u)
	r.Status, r.Since = s, t.now
	return r
}

// finalize ends a unit with a final status decided here (not by an agent).
// A unit that was running keeps the start its agent reported.
func (t *txn) finalize(u unit, s schemas.HostStatus, reason string) {
	was := t.table(u.step, u.phase).Status[u.idx]
	var started time.Time
	var agent string
	if was == schemas.HostRunning {
		started, agent = t.runningSince(u)
	}
	r := t.set(u, s)
	r.EndedAt, r.Error = t.now, reason
	if was == schemas.HostRunning {
		r.StartedAt = started
		if r.AgentID == "" {
			r.AgentID = agent
		}
	}
	t.results = append(t.results, r.HostResult)
	t.emit(events.HostFinished, t.jobID(), t.execID(u)+".w", r.HostResult)
}

// runningSince says when, and on which agent, a running unit started, as
// its agent reported it in its started report: folded by this txn, or kept
// in a small job's state (see apply). A larger job's state keeps only the
// second the unit began running, and no agent.
func (t *txn) runningSince(u unit) (time.Time, string) {
	if r, ok := t.touched[u]; ok && !r.StartedAt.IsZero() {
		return r.StartedAt, r.AgentID
	}
	tab := t.table(u.step, u.phase)
	if hr, ok := t.st.Result(u.step, u.phase, u.idx); ok && hr.Status == schemas.HostRunning && hr.Attempt == tab.AttemptOf(u.idx) {
		return hr.StartedAt, hr.AgentID
	}
	return t.st.At(tab.Since[u.idx]), ""
}

// phases lists the unit tables a step has now: a file step in its upload
// phase also has its upload units.
func (t *txn) phases(step int) []string {
	if t.st.Steps[step].Phase == schemas.PhaseUpload {
		return []string{schemas.PhaseUpload, ""}
	}
	return []string{""}
}

// rows returns the cache rows of every target host this txn changed
// (upload units are kept in KV and the logs, not among the hosts).
func (t *txn) rows() []schemas.HostRow {
	out := make([]schemas.HostRow, 0, len(t.touched))
	for u, r := range t.touched {
		if u.phase == "" {
			out = append(out, *r)
		}
	}
	return out
}

// createdRows returns the cache rows of a new job's every target host: as
// its state has them, and as this txn changed them (a held first commit
// may carry results).
func (t *txn) createdRows() []schemas.HostRow {
	rows := statuscache.BuildRows(t.spec, t.st, nil)
	for i, r := range rows {
		if c, ok := t.touched[unit{step: r.Step, idx: r.Index}]; ok {
			rows[i] = *c
		}
	}
	return rows
}
