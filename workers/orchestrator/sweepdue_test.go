package orchestrator

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/schemas"
)

// cloneState deep-copies a state, so a probe leaves the original alone.
func cloneState(t *testing.T, st *schemas.JobState) *schemas.JobState {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var c schemas.JobState
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

// moves reports whether a sweep at `at` would kick the job.
func moves(t *testing.T, spec *schemas.JobSpec, st *schemas.JobState, at time.Time, dir Directory) bool {
	tx := newTxn(spec, cloneState(t, st), at, dir)
	tx.advance()
	return tx.changed || len(tx.kills) > 0
}

// The sweeper skips a job until dueAt: nothing moves it before, and it
// moves right after, for hosts waiting for an agent and hosts dispatched
// but never started; a running host or a stopping job is due at once.
func TestDueAtIsTheFirstMomentTheJobCanMove(t *testing.T) {
	spec, st := newJob(t, 0, "10.0.0.1", "10.0.0.2")
	dir := fakeDir{"10.0.0.1": true}
	newTxn(spec, st, t0, dir).advance() // 1 dispatched, 2 waiting for its agent
	due := dueAt(spec, st, t0)
	if want := t0.Add(10 * time.Second); !due.Equal(want) {
		t.Fatalf("due %v, want the agent wait's end %v", due, want)
	}
	for _, at := range []time.Time{t0, t0.Add(5 * time.Second), due} {
		if moves(t, spec, st, at, dir) {
			t.Errorf("the job moved at %v, before it was due", at.Sub(t0))
		}
	}
	if !moves(t, spec, st, due.Add(time.Second), dir) {
		t.Errorf("the job did not move a second after it was due")
	}
	// host 2 ends agent_offline; host 1's task was never started
	newTxn(spec, st, t0.Add(11*time.Second), dir).advance()
	due = dueAt(spec, st, t0.Add(11*time.Second))
	if want := t0.Add(10*time.Second + startSlack + reportLag); !due.Equal(want) {
		t.Fatalf("due %v, want the start deadline %v", due.Sub(t0), want.Sub(t0))
	}
	if moves(t, spec, st, due, dir) || !moves(t, spec, st, due.Add(time.Second), dir) {
		t.Errorf("the start deadline does not move the job exactly after %v", due.Sub(t0))
	}
	// a started host may lose its agent any time
	tx := newTxn(spec, st, t0.Add(12*time.Second), dir)
	tx.apply(schemas.Report{Kind: schemas.ReportStarted, Host: 0, Attempt: 1})
	tx.advance()
	if now := t0.Add(13 * time.Second); !dueAt(spec, st, now).Equal(now) {
		t.Errorf("a job with a running host is due %v, want now", dueAt(spec, st, now))
	}
}

// A host not yet dispatched (beyond the job's concurrency) moves only by
// a commit or an agent arriving, never by time: it sets no deadline.
func TestPendingHostsSetNoDeadline(t *testing.T) {
	spec, st := newJob(t, 1, "10.0.0.1", "10.0.0.2")
	dir := fakeDir{"10.0.0.1": true}
	newTxn(spec, st, t0, dir).advance() // 1 dispatched, 2 pending behind it
	if got := statuses(st); got[0] != "dispatched" || got[1] != "pending" {
		t.Fatalf("statuses %v", got)
	}
	due, want := dueAt(spec, st, t0), t0.Add(10*time.Second+startSlack+reportLag)
	if !due.Equal(want) {
		t.Errorf("due %v, want host 1's start deadline %v", due.Sub(t0), want.Sub(t0))
	}
	if moves(t, spec, st, due, dir) {
		t.Errorf("the job moved before it was due")
	}
}

// final reads a record's status without decoding it, and decodes any
// record that is not in JobState's own form.
func TestFinalPeek(t *testing.T) {
	for raw, want := range map[string]bool{
		`{"v":1,"id":7,"status":"success","step":0,"steps":[{"status":"running"}]}`: true,
		`{"v":1,"id":7,"status":"running","steps":[{"status":"success"}]}`:          false,
		`{"id":7,"steps":[{"status":"running"}],"status":"failed"}`:                 true,
		`{"v":1,"steps":[{"status":"success"}],"status":"running"}`:                 false,
		`{"v":1,"id":7}`: false,
		`not json`:       false,
	} {
		if got := final([]byte(raw)); got != want {
			t.Errorf("final(%s) = %v, want %v", raw, got, want)
		}
	}
	st := schemas.JobState{V: 1, ID: 9, Status: schemas.JobStopped, Steps: []schemas.StepState{{Status: schemas.JobRunning}}}
	b, _ := json.Marshal(st)
	if !final(b) {
		t.Errorf("final(%s) = false", b)
	}
}
