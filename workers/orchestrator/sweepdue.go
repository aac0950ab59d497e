package orchestrator

// This file holds when the sweeper must look at a job again. Between
// commits a job changes only by time (its hosts' deadlines) and by agents
// coming online; a job waiting for agents that have not come needs no
// look until its earliest deadline, so the sweeper's cost follows the jobs
// that can move, not every job queued (10,000 jobs waiting for agents
// would otherwise be decoded, and their specs read, every second).

import (
	"time"

	"github.com/fleetjob/fleetjob/schemas"
)

// sweepMark is a job the sweeper looked at and left alone: nothing moves
// it before due unless its state changes (a new record replaces the mark)
// or an agent arrives.
type sweepMark struct {
	arrivals uint64
	due      int64 // unix nanoseconds
	created  int64 // unix nanoseconds, for its retention, checked without a decode
}

func newSweepMark(arrivals uint64, due, created time.Time) sweepMark {
	return sweepMark{arrivals: arrivals, due: due.UnixNano(), created: created.UnixNano()}
}

// set tells a mark from the zero one (no job is created at the epoch).
func (m sweepMark) set() bool { return m.created != 0 }

// arrivalCounter is a directory that counts agents coming online (the
// registry); with another directory the sweeper looks at every job at
// every sweep.
type arrivalCounter interface{ Arrivals() uint64 }

func (w *Worker) arrivals() (uint64, bool) {
	a, ok := w.dir.(arrivalCounter)
	if !ok {
		return 0, false
	}
	return a.Arrivals(), true
}

// dueAt is the earliest time at which expireTable could end a unit of
// the job, given the state as it is, assuming no agent comes online; now
// when the job must be looked at every sweep (running hosts, whose agents
// may go silent at any time, a stop whose kills are resent). It mirrors
// expireTable and dispatchTable: keep them together.
func dueAt(spec *schemas.JobSpec, st *schemas.JobState, now time.Time) time.Time {
	if st.Status == schemas.JobStopping {
		return now
	}
	wait := time.Duration(spec.AgentWait) * time.Second
	due := time.Time{}
	earliest := func(t time.Time) {
		if due.IsZero() || t.Before(due) {
			due = t
		}
	}
	for step := range st.Steps {
		ss := &st.Steps[step]
		for _, tab := range []*schemas.HostTable{&ss.Hosts, &ss.Uploads} {
			for i, s := range tab.Status {
				since := st.At(tab.Since[i])
				switch {
				case s.Final():
				case s == schemas.HostPending:
					// moves only by a commit (its batch, a free slot) or
					// an agent arriving, never by time
				case s == schemas.HostWaitingAgent:
					earliest(since.Add(wait))
				case s == schemas.HostDispatched:
					earliest(since.Add(wait + startSlack + reportLag))
				default: // running: its agent may go silent at any time
					return now
				}
			}
		}
	}
	if due.IsZero() {
		return now // nothing to wait for: let the sweep decide
	}
	return due
}
