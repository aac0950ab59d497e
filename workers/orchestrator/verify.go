package orchestrator

// This file holds the check every report passes before it is applied: its
// subject names who published it (the server lets an agent publish only on
// its own), and that agent must be the one the unit was dispatched to.

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/schemas"
)

// Reasons a report is refused, the label values of
// fleetjob_reports_refused_total.
const (
	refuseSubject     = "bad_subject"      // not a result subject's shape
	refuseSweeper     = "sweeper_subject"  // not a kick on the sweeper's subject
	refuseKick        = "kick_from_agent"  // a kick on an agent's subject
	refuseJob         = "job_mismatch"     // the body's job is not the subject's
	refuseAgent       = "agent_mismatch"   // the body's agent is not the subject's
	refuseUnknown     = "unknown_agent"    // no such agent in the registry
	refusePool        = "pool_mismatch"    // the agent is not of the subject's pool
	refuseUnit        = "unknown_unit"     // no such step or host in the job
	refuseNotHostOf   = "not_dispatched"   // the agent does not serve the unit's host
	refuseUndecodable = "undecodable_body" // not a report
)

func newRefusedCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fleetjob_reports_refused_total",
		Help: "Reports dropped unapplied: published by an agent the unit was not dispatched to, or malformed, by reason.",
	}, []string{"reason"})
}

// verify says why a report must be refused ("" when it may be applied).
// An error is a spec that could not be loaded: the report is retried.
func (w *Worker) verify(ctx context.Context, from schemas.ResultFrom, r *schemas.Report) (string, error) {
	switch {
	case from.Sweeper:
		if r.Kind != schemas.ReportKick || r.JobID != from.Job {
			return refuseSweeper, nil
		}
		return "", nil
	case r.Kind == schemas.ReportKick:
		return refuseKick, nil
	case r.JobID != from.Job:
		return refuseJob, nil
	case r.AgentID != from.Agent:
		return refuseAgent, nil
	}
	a, ok := w.dir.Agent(from.Agent)
	if !ok {
		return refuseUnknown, nil
	}
	if a.TaskPool() != from.Pool {
		return refusePool, nil
	}
	spec, err := w.spec(ctx, from.Job)
	if errors.Is(err, schemas.ErrNotFound) {
		return "", nil // no job: nothing to apply it to
	}
	if err != nil {
		return "", err
	}
	host, ok := unitHost(spec, r.Step, r.Phase, r.Host)
	if !ok {
		return refuseUnit, nil
	}
	if a.Host() != host {
		return refuseNotHostOf, nil
	}
	return "", nil
}

// unitHost is the machine a unit of spec runs on; ok is false when the
// job has no such unit.
func unitHost(spec *schemas.JobSpec, step int, phase string, idx int) (schemas.Host, bool) {
	if step < 0 || step >= len(spec.Steps) || idx < 0 {
		return schemas.Host{}, false
	}
	s := spec.Steps[step]
	if phase == schemas.PhaseUpload {
		if s.File == nil {
			return schemas.Host{}, false
		}
		units := s.File.UploadUnits()
		if idx >= len(units) {
			return schemas.Host{}, false
		}
		return units[idx].Host, true
	}
	if idx >= len(s.Targets) {
		return schemas.Host{}, false
	}
	return s.Targets[idx], true
}

// unknownRetries is how often a report from an agent this worker's
// registry does not know is asked for again before it is refused.
const unknownRetries = 5

// lastChance reports whether m has been delivered unknownRetries times.
func lastChance(m jetstream.Msg) bool {
	meta, err := m.Metadata()
	return err != nil || meta.NumDelivered >= unknownRetries
}

// refuse drops a report unapplied: it is acked (it will never become
// valid), logged and counted.
func (w *Worker) refuse(subject, reason string, r *schemas.Report) {
	w.m.ReportsRefused.WithLabelValues(reason).Inc()
	attrs := []any{"subject", subject, "reason", reason}
	if r != nil {
		attrs = append(attrs, "job", r.JobID, "step", r.Step, "host", r.Host, "agent", r.AgentID, "kind", r.Kind)
	}
	w.log.Warn("report refused", attrs...)
}
