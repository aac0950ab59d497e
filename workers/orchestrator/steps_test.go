package orchestrator

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/schemas"
)

// threeSteps is a job of a script step, a file step with a source host,
// and a script step, on two hosts with online agents.
func threeSteps(t *testing.T) (*schemas.JobSpec, *schemas.JobState, fakeDir) {
	t.Helper()
	dir := fakeDir{"10.0.0.1": true, "10.0.0.2": true, "10.0.0.9": true}
	spec := &schemas.JobSpec{AgentWait: 10, Targets: []schemas.Host{{IP: "10.0.0.1"}, {IP: "10.0.0.2"}}, Steps: []schemas.Step{
		{Script: &schemas.Script{Content: "a"}},
		{File: &schemas.FileSpec{Destination: "/tmp/x", Sources: []schemas.FileSource{{Hosts: []schemas.Host{{IP: "10.0.0.9"}}, Paths: []string{"/etc/hosts"}}}}},
		{Script: &schemas.Script{Content: "c"}},
	}}
	if err := spec.Normalize(); err != nil {
		t.Fatal(err)
	}
	return spec, schemas.NewJobState(7, spec, t0), dir
}

// leftOver lists what a final job must not have: steps still waiting and
// units (targets or upload units) still pending or waiting for an agent.
func leftOver(st *schemas.JobState) []string {
	var out []string
	for i, ss := range st.Steps {
		if ss.Status == schemas.JobWaiting {
			out = append(out, fmt.Sprintf("step %d waiting", i))
		}
		for name, tab := range map[string]schemas.HostTable{"host": ss.Hosts, "upload unit": ss.Uploads} {
			for j, s := range tab.Status {
				if !s.Final() {
					out = append(out, fmt.Sprintf("step %d %s %d %s", i, name, j, s))
				}
			}
		}
	}
	return out
}

// stepStatuses lists each step's status and the status words of its targets.
func stepStatuses(st *schemas.JobState) []string {
	var out []string
	for _, ss := range st.Steps {
		w := ss.Status + ":"
		for _, s := range ss.Hosts.Status {
			w += " " + s.String()
		}
		out = append(out, w)
	}
	return out
}

// eventStep is the step an event is about, if it is about one.
func eventStep(e events.Event) (int, bool) {
	switch d := e.Data.(type) {
	case schemas.HostResult:
		return d.Step, true
	case map[string]any:
		step, ok := d["step"].(int)
		return step, ok
	}
	return 0, false
}

func TestJobEndSkipsWhatItNeverReached(t *testing.T) {
	for _, c := range []struct {
		name string
		// end drives the job (advanced once: step 0 dispatched) to its end
		end  func(spec *schemas.JobSpec, st *schemas.JobState, dir fakeDir) *txn
		job  string
		want []string
	}{
		{"a step fails", func(spec *schemas.JobSpec, st *schemas.JobState, dir fakeDir) *txn {
			return finishAll(spec, st, dir, map[int]schemas.HostStatus{0: schemas.HostFailed, 1: schemas.HostFailed})
		}, schemas.JobFailed, []string{"failed: failed failed", "skipped: skipped skipped", "skipped: skipped skipped"}},
		{"a stop", func(spec *schemas.JobSpec, st *schemas.JobState, dir fakeDir) *txn {
			tx := newTxn(spec, st, t0, dir)
			tx.apply(finished(0, schemas.HostSuccess))
			tx.stop("admin", "")
			tx.apply(finished(1, schemas.HostStopped))
			tx.advance()
			return tx
		}, schemas.JobStopped, []string{"stopped: success stopped", "skipped: skipped skipped", "skipped: skipped skipped"}},
		{"an abort while a host runs", func(spec *schemas.JobSpec, st *schemas.JobState, dir fakeDir) *txn {
			tx := newTxn(spec, st, t0, dir)
			tx.apply(finished(0, schemas.HostSuccess))
			tx.abort("the command failed for good")
			return tx
		}, schemas.JobFailed, []string{"failed: success failed", "skipped: skipped skipped", "skipped: skipped skipped"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec, st, dir := threeSteps(t)
			newTxn(spec, st, t0, dir).advance()
			tx := c.end(spec, st, dir)
			if st.Status != c.job || !tx.finished {
				t.Fatalf("job %s (finished %v), want %s", st.Status, tx.finished, c.job)
			}
			if diff := cmp.Diff(stepStatuses(st), c.want); diff != "" {
				t.Errorf("steps (-got +want):\n%s", diff)
			}
			if got := leftOver(st); len(got) > 0 {
				t.Errorf("a final job has left over: %v", got)
			}
			// what never ran has no result and no event of its own
			for _, r := range tx.results {
				if r.Step > 0 {
					t.Errorf("a result for a unit that never ran: %+v", r)
				}
			}
			for _, e := range tx.events {
				if step, ok := eventStep(e); ok && step > 0 {
					t.Errorf("a %s event for step %d, which never ran", e.Kind, step)
				}
			}
			// the cache learns that the skipped hosts are skipped
			skippedRows := 0
			for _, r := range tx.rows() {
				if r.Step > 0 && r.Status == schemas.HostSkipped {
					skippedRows++
				}
			}
			if skippedRows != 4 {
				t.Errorf("%d cache rows of skipped hosts, want 4", skippedRows)
			}
		})
	}
}

func TestAbortBeforeTheJobStartedSkipsEveryStep(t *testing.T) {
	spec, st, dir := threeSteps(t)
	tx := newTxn(spec, st, t0, dir)
	tx.abort("undecodable submission")
	if got := leftOver(st); len(got) > 0 || st.Status != schemas.JobFailed || st.Reason != "undecodable submission" {
		t.Errorf("job %s %q, left over %v", st.Status, st.Reason, got)
	}
	want := []string{"skipped: skipped skipped", "skipped: skipped skipped", "skipped: skipped skipped"}
	if diff := cmp.Diff(stepStatuses(st), want); diff != "" {
		t.Errorf("steps (-got +want):\n%s", diff)
	}
}

func TestReopenedJobRunsTheStepsItSkipped(t *testing.T) {
	spec, st, dir := threeSteps(t)
	newTxn(spec, st, t0, dir).advance()
	finishAll(spec, st, dir, map[int]schemas.HostStatus{0: schemas.HostFailed})
	if st.Status != schemas.JobPartial || st.Steps[2].Status != schemas.StepSkipped {
		t.Fatalf("after step 0 partly failed: %v", stepStatuses(st))
	}
	tx := newTxn(spec, st, t0, dir)
	if err := tx.op(schemas.OpCommand{Step: 0, Op: schemas.OpIgnoreError}); err != nil {
		t.Fatal(err)
	}
	tx.advance()
	if !tx.reopened || st.Step != 1 || st.Steps[1].Phase != schemas.PhaseUpload || st.Steps[1].Uploads.Status[0] != schemas.HostDispatched {
		t.Fatalf("after ignore_error: reopened %v at step %d phase %q uploads %v", tx.reopened, st.Step, st.Steps[1].Phase, st.Steps[1].Uploads.Status)
	}
	want := []string{"ignored: failed success", "running: pending pending", "waiting: pending pending"}
	if diff := cmp.Diff(stepStatuses(st), want); diff != "" {
		t.Errorf("steps (-got +want):\n%s", diff)
	}
}
