package orchestrator

// This file holds how an agent's report is folded into the job state: a
// host started or finished, recorded exactly once per attempt.

import (
	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/schemas"
)

// apply folds one report into the state. Reports about hosts that are
// already final, or about an earlier attempt, are ignored: each host's
// result is recorded exactly once per attempt.
func (t *txn) apply(r schemas.Report) {
	if r.Kind == schemas.ReportKick || r.Step < 0 || r.Step >= len(t.st.Steps) {
		return
	}
	u := unit{step: r.Step, idx: r.Host, phase: r.Phase}
	tab := t.table(r.Step, r.Phase)
	if r.Host < 0 || r.Host >= len(tab.Status) || r.Attempt != tab.AttemptOf(r.Host) {
		return
	}
	cur := tab.Status[r.Host]
	if cur.Final() {
		return
	}
	switch r.Kind {
	case schemas.ReportStarted:
		if cur == schemas.HostRunning {
			return
		}
		row := t.set(u, schemas.HostRunning)
		row.AgentID, row.StartedAt = r.AgentID, r.StartedAt
		if t.spec.InlineResults() {
			// kept with the state, so that a host ended without its
			// agent's word keeps the start the agent reported
			t.st.PutResults([]schemas.HostResult{row.HostResult})
		}
		t.emit(events.HostStarted, t.jobID(), r.ExecID, row.HostResult)
	case schemas.ReportFinished:
		if !r.Status.Final() {
			return
		}
		started := r.StartedAt
		if started.IsZero() && cur == schemas.HostRunning {
			// an interrupted execution's report may not know its start
			started, _ = t.runningSince(u)
		}
		row := t.set(u, r.Status)
		row.AgentID, row.ExitCode, row.StartedAt, row.EndedAt = r.AgentID, r.ExitCode, started, r.EndedAt
		row.Lines, row.Error, row.Attempt = r.Lines, r.Error, r.Attempt
		// The log that rode in the report goes to the stored result
		// only (a small job's state, a larger job's segment): not to
		// the cache row nor the event. An agent that does not know a
		// larger job's smaller bound (Task.InlineMax) sends up to
		// MaxInlineLog, and it is kept: the agent stored it nowhere else.
		res := row.HostResult
		if r.Log != nil && t.spec.InlineLogLimit(r.Step) > 0 && len(*r.Log) <= schemas.MaxInlineLog {
			res.Log = r.Log
		}
		t.results = append(t.results, res)
		t.emit(events.HostFinished, t.jobID(), r.ExecID, row.HostResult)
		if r.Phase == schemas.PhaseUpload && r.Status == schemas.HostSuccess {
			t.addFiles(r.Step, r.Files)
		}
	}
}

// recorded picks the finished reports whose host is already final at the
// report's attempt: the state has them; their effects may be missing.
func (t *txn) recorded(reports []schemas.Report) []schemas.Report {
	var out []schemas.Report
	for _, r := range reports {
		if r.Kind != schemas.ReportFinished || r.Step < 0 || r.Step >= len(t.st.Steps) {
			continue
		}
		tab := t.table(r.Step, r.Phase)
		if r.Host >= 0 && r.Host < len(tab.Status) && tab.Status[r.Host].Final() && r.Attempt == tab.AttemptOf(r.Host) {
			out = append(out, r)
		}
	}
	return out
}
