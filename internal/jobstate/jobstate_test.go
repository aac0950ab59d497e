package jobstate

import (
	"testing"

	"github.com/fleetjob/fleetjob/schemas"
)

// Host statuses, short.
const (
	pending = schemas.HostPending
	waiting = schemas.HostWaitingAgent
	sent    = schemas.HostDispatched
	running = schemas.HostRunning
	ok      = schemas.HostSuccess
	failed  = schemas.HostFailed
	timeout = schemas.HostTimeout
	stopped = schemas.HostStopped
	offline = schemas.HostAgentOffline
	skipped = schemas.HostSkipped
)

func table(ss ...schemas.HostStatus) schemas.HostTable {
	return schemas.HostTable{Status: ss, Since: make([]uint32, len(ss))}
}

// job is a one-step job at status whose step is step.
func job(status string, step schemas.StepState) (*schemas.JobSpec, *schemas.JobState) {
	spec := &schemas.JobSpec{Steps: []schemas.Step{{}}}
	return spec, &schemas.JobState{ID: 7, Status: status, Steps: []schemas.StepState{step}}
}

func TestStepOverAndPassed(t *testing.T) {
	for _, c := range []struct {
		status       string
		over, passed bool
	}{
		{schemas.JobWaiting, false, false},
		{schemas.JobRunning, false, false},
		{schemas.JobSuccess, true, true},
		{schemas.JobFailed, true, false},
		{schemas.JobPartial, true, false},
		{schemas.JobStopped, true, false},
		{schemas.StepIgnored, true, true},
		{schemas.StepSkipped, true, true},
	} {
		t.Run(c.status, func(t *testing.T) {
			if got := StepOver(c.status); got != c.over {
				t.Errorf("StepOver: got %v, want %v", got, c.over)
			}
			if got := StepPassed(c.status); got != c.passed {
				t.Errorf("StepPassed: got %v, want %v", got, c.passed)
			}
		})
	}
}

func TestAllFinalAndAllSucceeded(t *testing.T) {
	for _, c := range []struct {
		name             string
		hosts            schemas.HostTable
		begin, end       int
		final, succeeded bool
	}{
		{"all succeeded", table(ok, ok, skipped), 0, 3, true, true},
		{"one failed", table(ok, failed, ok), 0, 3, true, false},
		{"one still running", table(ok, running, ok), 0, 3, false, false},
		{"only the batch counts", table(failed, ok, pending), 1, 2, true, true},
		{"an empty range", table(pending), 0, 0, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := AllFinal(c.hosts, c.end); got != c.final {
				t.Errorf("AllFinal: got %v, want %v", got, c.final)
			}
			if got := AllSucceeded(c.hosts, c.begin, c.end); got != c.succeeded {
				t.Errorf("AllSucceeded: got %v, want %v", got, c.succeeded)
			}
		})
	}
}

func TestStepOutcome(t *testing.T) {
	for _, c := range []struct {
		name      string
		job       string
		hosts     schemas.HostTable
		aborted   bool
		onFailure string
		want      string
	}{
		{"every host succeeded", schemas.JobRunning, table(ok, ok), false, "", schemas.JobSuccess},
		{"skipped hosts count as passed", schemas.JobRunning, table(ok, skipped), false, "", schemas.JobSuccess},
		{"some succeeded", schemas.JobRunning, table(ok, timeout), false, "", schemas.JobPartial},
		{"none succeeded", schemas.JobRunning, table(failed, offline), false, "", schemas.JobFailed},
		{"gave up past the maximum failure percentage", schemas.JobRunning, table(ok, failed, skipped), true, "", schemas.JobFailed},
		{"the job is stopping", schemas.JobStopping, table(ok, stopped), false, "", schemas.JobStopped},
		{"a failure that may be ignored", schemas.JobRunning, table(failed, ok), false, schemas.OnFailureContinue, schemas.StepIgnored},
		{"a success that may have been ignored", schemas.JobRunning, table(ok), false, schemas.OnFailureContinue, schemas.JobSuccess},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec, st := job(c.job, schemas.StepState{Status: schemas.JobRunning, Hosts: c.hosts, Aborted: c.aborted})
			spec.Steps[0].OnFailure = c.onFailure
			if got := StepOutcome(spec, st, 0); got != c.want {
				t.Errorf("got %s, want %s", got, c.want)
			}
		})
	}
}

func TestBatchHold(t *testing.T) {
	// four hosts in batches [0,1) [1,3) [3,4); batch 1 (the second) has ended
	for _, c := range []struct {
		name  string
		mode  int
		batch schemas.HostTable
		want  string
	}{
		{"pause on failure, no failure", schemas.RollingPauseOnFailure, table(failed, ok, ok, pending), ""},
		{"pause on failure, a failure", schemas.RollingPauseOnFailure, table(ok, ok, timeout, pending), schemas.HoldFailure},
		{"ignore failures", schemas.RollingIgnoreFailure, table(ok, failed, failed, pending), ""},
		{"confirm each batch", schemas.RollingConfirmEach, table(ok, ok, ok, pending), schemas.HoldConfirm},
		{"confirm each batch, a failure", schemas.RollingConfirmEach, table(ok, failed, ok, pending), schemas.HoldFailure},
	} {
		t.Run(c.name, func(t *testing.T) {
			ss := &schemas.StepState{Hosts: c.batch, Batches: []int{1, 3, 4}, Batch: 1}
			if got := BatchHold(&schemas.Rolling{Mode: c.mode}, ss); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestMaxFailExceeded(t *testing.T) {
	for _, c := range []struct {
		name  string
		hosts schemas.HostTable
		limit int
		want  bool
	}{
		{"no limit", table(failed, failed), 0, false},
		{"at the limit", table(failed, ok, ok, ok, ok), 20, false},
		{"past the limit", table(failed, failed, ok, ok, ok), 20, true},
		{"skipped and unfinished hosts are not failures", table(skipped, skipped, pending, running, ok), 20, false},
		{"every final status but success and skipped is", table(timeout, offline, stopped, ok), 50, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := MaxFailExceeded(c.hosts, c.limit); got != c.want {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestJobOutcome(t *testing.T) {
	for _, c := range []struct {
		name      string
		job, step string
		want      string
	}{
		{"the last step passed", schemas.JobRunning, schemas.JobSuccess, schemas.JobSuccess},
		{"the last step was skipped", schemas.JobRunning, schemas.StepSkipped, schemas.JobSuccess},
		{"a step failed", schemas.JobRunning, schemas.JobFailed, schemas.JobFailed},
		{"a step partly failed", schemas.JobWaitingUser, schemas.JobPartial, schemas.JobPartial},
		{"a stop", schemas.JobStopping, schemas.JobSuccess, schemas.JobStopped},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, st := job(c.job, schemas.StepState{Status: c.step})
			if got := JobOutcome(st); got != c.want {
				t.Errorf("got %s, want %s", got, c.want)
			}
		})
	}
}

func TestHostRules(t *testing.T) {
	for _, c := range []struct {
		status                        schemas.HostStatus
		undispatched, passed, retried bool
	}{
		{pending, true, false, false},
		{waiting, true, false, false},
		{sent, false, false, false},
		{running, false, false, false},
		{ok, false, true, false},
		{failed, false, false, true},
		{timeout, false, false, true},
		{stopped, false, false, true},
		{offline, false, false, true},
		{schemas.HostInterrupted, false, false, true},
		{skipped, false, true, true},
	} {
		t.Run(c.status.String(), func(t *testing.T) {
			if got := Undispatched(c.status); got != c.undispatched {
				t.Errorf("Undispatched: got %v, want %v", got, c.undispatched)
			}
			if got := HostPassed(c.status); got != c.passed {
				t.Errorf("HostPassed: got %v, want %v", got, c.passed)
			}
			if got := Retried(c.status); got != c.retried {
				t.Errorf("Retried: got %v, want %v", got, c.retried)
			}
		})
	}
	if n := len(schemas.HostStatusNames()); n != 11 {
		t.Errorf("%d host statuses: add the new ones to this table", n)
	}
}

func TestUnreached(t *testing.T) {
	for _, c := range []struct {
		status string
		want   bool
	}{
		{schemas.JobWaiting, true},
		{schemas.JobRunning, false},
		{schemas.JobFailed, false},
		{schemas.StepSkipped, false},
	} {
		t.Run(c.status, func(t *testing.T) {
			if got := Unreached(&schemas.StepState{Status: c.status}); got != c.want {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}
