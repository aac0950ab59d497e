// Package jobstate is the pure job state machine: the rules that say which
// operation a job's step accepts now, when a step is over and how it
// ended, when a rolling step holds, when too many hosts failed, and how a
// job ends. It does no I/O, knows no agents and emits no events, so the API
// (to refuse early) and the workers (to decide) apply the same rules to
// the same schemas.JobState. The workers' orchestrator performs the
// transitions these rules decide.
package jobstate

import "github.com/fleetjob/fleetjob/schemas"

// StepOver reports whether a step status is final.
func StepOver(status string) bool {
	switch status {
	case schemas.JobSuccess, schemas.JobFailed, schemas.JobPartial, schemas.JobStopped, schemas.StepIgnored, schemas.StepSkipped:
		return true
	}
	return false
}

// StepPassed reports whether a finished step lets the job go on.
func StepPassed(status string) bool {
	return status == schemas.JobSuccess || status == schemas.StepIgnored || status == schemas.StepSkipped
}

// HostPassed reports whether a host's status counts as a success for its
// step: it succeeded, or it was skipped.
func HostPassed(s schemas.HostStatus) bool {
	return s == schemas.HostSuccess || s == schemas.HostSkipped
}

// Undispatched reports whether a unit has not been sent to an agent: it is
// pending, or waits for an agent to serve its host.
func Undispatched(s schemas.HostStatus) bool {
	return s == schemas.HostPending || s == schemas.HostWaitingAgent
}

// AllFinal reports whether the hosts before end have all ended.
func AllFinal(hosts schemas.HostTable, end int) bool {
	for _, s := range hosts.Status[:end] {
		if !s.Final() {
			return false
		}
	}
	return true
}

// AllSucceeded reports whether the hosts from begin to end (exclusive) all
// passed (HostPassed).
func AllSucceeded(hosts schemas.HostTable, begin, end int) bool {
	for _, s := range hosts.Status[begin:end] {
		if !HostPassed(s) {
			return false
		}
	}
	return true
}

// StepOutcome is the status a step of the job ends with once its hosts
// have: stopped when the job is stopping; otherwise success when every
// host passed, partial when some succeeded, failed when none did or the
// step gave up (its maximum failure percentage was passed); a step whose
// failure may be ignored (on_failure continue) ends ignored instead of
// partial or failed.
func StepOutcome(spec *schemas.JobSpec, st *schemas.JobState, step int) string {
	hs := st.Steps[step].Hosts
	ok, skipped := 0, 0
	for _, s := range hs.Status {
		switch s {
		case schemas.HostSuccess:
			ok++
		case schemas.HostSkipped:
			skipped++
		}
	}
	var out string
	switch {
	case st.Status == schemas.JobStopping:
		return schemas.JobStopped
	case st.Steps[step].Aborted:
		out = schemas.JobFailed
	case ok+skipped == len(hs.Status):
		return schemas.JobSuccess
	case ok > 0:
		out = schemas.JobPartial
	default:
		out = schemas.JobFailed
	}
	if spec.Steps[step].OnFailure == schemas.OnFailureContinue {
		return schemas.StepIgnored
	}
	return out
}

// BatchHold says what a rolling step does once the hosts of its current
// batch have all ended and more batches remain: "" to go on with the next
// batch, schemas.HoldFailure to wait for a person after a failure (unless
// the mode ignores failures), schemas.HoldConfirm when every batch waits
// for confirmation.
func BatchHold(r *schemas.Rolling, ss *schemas.StepState) string {
	begin := 0
	if ss.Batch > 0 {
		begin = ss.Batches[ss.Batch-1]
	}
	failed := !AllSucceeded(ss.Hosts, begin, ss.BatchEnd())
	switch {
	case failed && r.Mode != schemas.RollingIgnoreFailure:
		return schemas.HoldFailure
	case r.Mode == schemas.RollingConfirmEach:
		return schemas.HoldConfirm
	}
	return ""
}

// MaxFailExceeded reports whether more than limitPercent of a step's hosts
// have failed (ended without passing). A limit of 0 or less never is.
func MaxFailExceeded(hosts schemas.HostTable, limitPercent int) bool {
	if limitPercent <= 0 {
		return false
	}
	failed := 0
	for _, s := range hosts.Status {
		if s.Final() && !HostPassed(s) {
			failed++
		}
	}
	return failed*100 > limitPercent*len(hosts.Status)
}

// Unreached reports whether a step of a job has never started: the job has
// not got to it yet or, if the job is ending, never will. A job that ends
// skips such steps with all their units (schemas.StepSkipped,
// schemas.HostSkipped), so a final job has none left waiting.
func Unreached(ss *schemas.StepState) bool { return ss.Status == schemas.JobWaiting }

// JobOutcome is the status a job ends with once its current step is over
// and it goes no further: stopped after a stop, success when that step
// passed (it was the last), otherwise that step's own status.
func JobOutcome(st *schemas.JobState) string {
	last := st.Steps[st.Step].Status
	switch {
	case st.Status == schemas.JobStopping:
		return schemas.JobStopped
	case StepPassed(last):
		return schemas.JobSuccess
	}
	return last
}
