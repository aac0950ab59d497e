package jobstate

import (
	"fmt"
	"slices"

	"github.com/fleetjob/fleetjob/schemas"
)

// CheckOp says whether an operation may be applied to a step of the job
// now: only to the current step, only when no host of it runs, and only in
// the states where the operation means something. An unknown operation
// wraps schemas.ErrInvalid, a step the job does not have
// schemas.ErrNotFound, and every other refusal schemas.ErrConflict. Steps
// are numbered as clients number them: from 0, as in the native API's
// /v1/jobs/{id}/steps/{step}/{op}.
func CheckOp(st *schemas.JobState, op string, step int) error {
	refuse := func(format string, args ...any) error {
		return &Refusal{Op: op, Step: step, Reason: fmt.Sprintf(format, args...)}
	}
	if !slices.Contains(schemas.StepOps, op) {
		return schemas.Invalid("op", "unknown operation %q", op)
	}
	if step < 0 || step >= len(st.Steps) {
		return schemas.NotFound("job %d has no step %d", st.ID, step)
	}
	if step != st.Step {
		return refuse("the job is at step %d", st.Step)
	}
	if st.Status == schemas.JobStopping || st.Status == schemas.JobStopped || st.Status == schemas.JobWaiting {
		return refuse("the job is %s", st.Status)
	}
	ss := &st.Steps[step]
	for _, s := range ss.Hosts.Status {
		if s == schemas.HostDispatched || s == schemas.HostRunning {
			return refuse("hosts are still running")
		}
	}
	failed := ss.Status == schemas.JobFailed || ss.Status == schemas.JobPartial
	switch op {
	case schemas.OpConfirm:
		if ss.Hold == "" {
			return refuse("it waits for no confirmation")
		}
	case schemas.OpIgnoreError:
		if !failed && ss.Hold != schemas.HoldFailure {
			return refuse("it has no failure to ignore")
		}
	case schemas.OpSkip:
		if !failed && ss.Hold == "" {
			return refuse("only a failed step or one that waits may be skipped")
		}
	case schemas.OpRetryFailed:
		if !failed && ss.Hold == "" {
			return refuse("only a failed step or one that waits may be retried")
		}
		if !slices.ContainsFunc(ss.Hosts.Status, Retried) {
			return refuse("no host failed")
		}
	case schemas.OpRetryAll:
		if !failed && ss.Hold == "" && ss.Status != schemas.JobSuccess {
			return refuse("the step is %s", ss.Status)
		}
	}
	return nil
}

// Retried reports whether retry-failed runs a host of the step again: it
// ended without success.
func Retried(s schemas.HostStatus) bool { return s.Final() && s != schemas.HostSuccess }

// Refusal is an operation the job's state does not allow: a conflict.
// Surfaces name the operation and the step in their own words.
type Refusal struct {
	Op     string // schemas.OpConfirm, …
	Step   int
	Reason string // why, e.g. "no host failed"
}

func (r *Refusal) Error() string { return fmt.Sprintf("%s on step %d: %s", r.Op, r.Step, r.Reason) }

// Unwrap makes errors.Is(err, schemas.ErrConflict) true.
func (r *Refusal) Unwrap() error { return schemas.ErrConflict }
