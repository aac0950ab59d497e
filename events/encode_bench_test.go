package events

import (
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/schemas"
)

// BenchmarkBatchesCommit encodes what a one-host job's creation commits:
// job.created, job.started and step.started in one batch.
func BenchmarkBatchesCommit(b *testing.B) {
	at := time.Date(2026, 12, 2, 1, 2, 3, 4, time.UTC)
	sum := schemas.JobSummary{ID: 42, Name: "bench", Status: schemas.JobRunning, Owner: "admin", Surface: "native",
		CreatedAt: at, UpdatedAt: at, TotalHosts: 1, Counts: map[string]int{"waiting_agent": 1}}
	evs := []Event{
		{Kind: JobCreated, Subject: "42", ID: "42", Time: at, Data: sum},
		{Kind: JobStarted, Subject: "42", ID: "42", Time: at, Data: sum},
		{Kind: StepStarted, Subject: "42", ID: "42.0", Time: at, Data: map[string]any{"job": 42, "step": 0}},
	}
	for b.Loop() {
		if _, err := Batches("fleetjob/worker/bench", evs); err != nil {
			b.Fatal(err)
		}
	}
}
