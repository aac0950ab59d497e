package events

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/fleetjob/fleetjob/schemas"
)

// The subjects events publishes on are the ones schemas' topology
// configures: every kind lands in the EVENTS stream, and the callback
// consumer's filter, which schemas spells out without importing events,
// takes job.finished and nothing else.
func TestSubjectsAgreeWithTopology(t *testing.T) {
	top := schemas.DefaultTopology()
	var streamSubjects []string
	for _, sc := range top.Streams() {
		if sc.Name == schemas.StreamEvents {
			streamSubjects = sc.Subjects
		}
	}
	callbacks := top.CallbackConsumer().FilterSubject
	kinds := []string{JobCreated, JobStarted, JobStopping, JobFinished, StepStarted, StepFinished, StepWaiting,
		StepOperated, HostStarted, HostFinished, AgentOnline, AgentOffline,
		AuditSubmit, AuditStop, AuditOperate, AuditCredentialCreate, AuditCredentialRevoke}
	for _, kind := range kinds {
		subj := Subject(kind, "42")
		inStream := false
		for _, f := range streamSubjects {
			inStream = inStream || server.SubjectMatchesFilter(subj, f)
		}
		if !inStream {
			t.Errorf("%s: subject %q is in none of the EVENTS stream's subjects %q", kind, subj, streamSubjects)
		}
		if got, want := server.SubjectMatchesFilter(subj, callbacks), kind == JobFinished; got != want {
			t.Errorf("%s: callback consumer filter %q takes %q: got %v, want %v", kind, callbacks, subj, got, want)
		}
	}
	if got, want := Subject(JobFinished, "*"), callbacks; got != want {
		t.Errorf("job.finished of every job: got %q, want the callback filter %q", got, want)
	}
}
