package jobstate

import (
	"errors"
	"fmt"
	"testing"

	"github.com/fleetjob/fleetjob/schemas"
)

func TestCheckOp(t *testing.T) {
	held := func(why string, hs schemas.HostTable) schemas.StepState {
		return schemas.StepState{Status: schemas.JobRunning, Hold: why, Hosts: hs}
	}
	ended := func(status string, hs schemas.HostTable) schemas.StepState {
		return schemas.StepState{Status: status, Hosts: hs}
	}
	for _, c := range []struct {
		name    string
		job     string
		at      int // the job's current step
		steps   []schemas.StepState
		op      string
		step    int
		kind    error // nil: allowed
		message string
	}{
		{"confirm a held batch", schemas.JobWaitingUser, 0, []schemas.StepState{held(schemas.HoldConfirm, table(ok, pending))}, schemas.OpConfirm, 0, nil, ""},
		{"skip a failed step", schemas.JobFailed, 1, []schemas.StepState{ended(schemas.JobSuccess, table(ok)), ended(schemas.JobFailed, table(failed))}, schemas.OpSkip, 1, nil, ""},
		{"ignore a failure that holds", schemas.JobWaitingUser, 0, []schemas.StepState{held(schemas.HoldFailure, table(failed, pending))}, schemas.OpIgnoreError, 0, nil, ""},
		{"retry the failed hosts", schemas.JobPartial, 0, []schemas.StepState{ended(schemas.JobPartial, table(ok, timeout))}, schemas.OpRetryFailed, 0, nil, ""},
		{"retry all of a step that succeeded", schemas.JobSuccess, 0, []schemas.StepState{ended(schemas.JobSuccess, table(ok))}, schemas.OpRetryAll, 0, nil, ""},
		{"an unknown operation", schemas.JobFailed, 0, []schemas.StepState{ended(schemas.JobFailed, table(failed))}, "dance", 0, schemas.ErrInvalid, `op: unknown operation "dance"`},
		{"a step the job does not have", schemas.JobFailed, 0, []schemas.StepState{ended(schemas.JobFailed, table(failed))}, schemas.OpSkip, 9, schemas.ErrNotFound, "job 7 has no step 9"},
		{"a negative step", schemas.JobFailed, 0, []schemas.StepState{ended(schemas.JobFailed, table(failed))}, schemas.OpSkip, -1, schemas.ErrNotFound, "job 7 has no step -1"},
		{"not the current step", schemas.JobWaitingUser, 0, []schemas.StepState{held(schemas.HoldConfirm, table(ok)), {Status: schemas.JobWaiting, Hosts: table(pending)}}, schemas.OpConfirm, 1, schemas.ErrConflict, "confirm on step 1: the job is at step 0"},
		{"steps are numbered from 0, as in the URL", schemas.JobFailed, 3, tenSteps(3), schemas.OpSkip, 9, schemas.ErrConflict, "skip on step 9: the job is at step 3"},
		{"a stopped job", schemas.JobStopped, 0, []schemas.StepState{ended(schemas.JobStopped, table(stopped))}, schemas.OpRetryAll, 0, schemas.ErrConflict, "retry_all on step 0: the job is stopped"},
		{"a job not started", schemas.JobWaiting, 0, []schemas.StepState{{Status: schemas.JobWaiting, Hosts: table(pending)}}, schemas.OpSkip, 0, schemas.ErrConflict, "skip on step 0: the job is waiting"},
		{"hosts still run", schemas.JobWaitingUser, 0, []schemas.StepState{held(schemas.HoldFailure, table(failed, running))}, schemas.OpSkip, 0, schemas.ErrConflict, "skip on step 0: hosts are still running"},
		{"confirm without a hold", schemas.JobFailed, 0, []schemas.StepState{ended(schemas.JobFailed, table(failed))}, schemas.OpConfirm, 0, schemas.ErrConflict, "confirm on step 0: it waits for no confirmation"},
		{"ignore without a failure", schemas.JobWaitingUser, 0, []schemas.StepState{held(schemas.HoldConfirm, table(ok))}, schemas.OpIgnoreError, 0, schemas.ErrConflict, "ignore_error on step 0: it has no failure to ignore"},
		{"skip a step that succeeded", schemas.JobSuccess, 0, []schemas.StepState{ended(schemas.JobSuccess, table(ok))}, schemas.OpSkip, 0, schemas.ErrConflict, "skip on step 0: only a failed step or one that waits may be skipped"},
		{"retry a step that succeeded", schemas.JobSuccess, 0, []schemas.StepState{ended(schemas.JobSuccess, table(ok))}, schemas.OpRetryFailed, 0, schemas.ErrConflict, "retry_failed on step 0: only a failed step or one that waits may be retried"},
		{"retry failed hosts when none failed", schemas.JobWaitingUser, 0, []schemas.StepState{held(schemas.HoldConfirm, table(ok, pending))}, schemas.OpRetryFailed, 0, schemas.ErrConflict, "retry_failed on step 0: no host failed"},
		{"retry all of a running step", schemas.JobRunning, 0, []schemas.StepState{ended(schemas.JobRunning, table(ok, pending))}, schemas.OpRetryAll, 0, schemas.ErrConflict, "retry_all on step 0: the step is running"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := &schemas.JobState{ID: 7, Status: c.job, Step: c.at, Steps: c.steps}
			err := CheckOp(st, c.op, c.step)
			if c.kind == nil {
				if err != nil {
					t.Fatalf("got %v, want the operation allowed", err)
				}
				return
			}
			if !errors.Is(err, c.kind) {
				t.Fatalf("got %v, want an error wrapping %v", err, c.kind)
			}
			if got := schemas.Message(err); got != c.message {
				t.Errorf("message: got %q, want %q", got, c.message)
			}
		})
	}
}

// tenSteps is a job of ten steps whose step at failed and the rest wait.
func tenSteps(at int) []schemas.StepState {
	steps := make([]schemas.StepState, 10)
	for i := range steps {
		steps[i] = schemas.StepState{Status: schemas.JobWaiting, Hosts: table(pending)}
	}
	steps[at] = schemas.StepState{Status: schemas.JobFailed, Hosts: table(failed)}
	return steps
}

func ExampleCheckOp() {
	st := &schemas.JobState{ID: 7, Status: schemas.JobFailed, Step: 1, Steps: []schemas.StepState{
		{Status: schemas.JobSuccess, Hosts: schemas.NewHostTable(2)},
		{Status: schemas.JobFailed, Hosts: schemas.NewHostTable(2)},
	}}
	fmt.Println(CheckOp(st, schemas.OpSkip, 1))
	fmt.Println(CheckOp(st, schemas.OpRetryAll, 0))
	// Output:
	// <nil>
	// retry_all on step 0: the job is at step 1
}
