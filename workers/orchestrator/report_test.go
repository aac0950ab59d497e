package orchestrator

import (
	"fmt"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/schemas"
)

func TestInterruptedHostKeepsItsStart(t *testing.T) {
	// the agent started the task 1.5 s in; the worker folded its started
	// report 2 s in (the state's own clock has whole seconds)
	agentStart := t0.Add(1500 * time.Millisecond)
	started := schemas.Report{Kind: schemas.ReportStarted, Attempt: 1, AgentID: "agent-10.0.0.1", StartedAt: agentStart}
	interrupted := finished(0, schemas.HostInterrupted) // an agent that restarted does not say when it started
	interrupted.AgentID = started.AgentID
	for _, c := range []struct {
		name  string
		hosts int // more than schemas.MaxInlineResults: results live outside the state
		// end interrupts the running host 0; it returns the txn that ended it
		end       func(spec *schemas.JobSpec, st *schemas.JobState, dir fakeDir) *txn
		status    schemas.HostStatus
		wantStart time.Time
	}{
		{"the agent restarted", 1, func(spec *schemas.JobSpec, st *schemas.JobState, dir fakeDir) *txn {
			tx := newTxn(spec, st, t0.Add(5*time.Second), dir)
			tx.apply(interrupted)
			return tx
		}, schemas.HostInterrupted, agentStart},
		{"the agent restarted, both reports in one batch", 1, nil, schemas.HostInterrupted, agentStart},
		{"the agent is gone", 1, func(spec *schemas.JobSpec, st *schemas.JobState, dir fakeDir) *txn {
			delete(dir, "10.0.0.1")
			tx := newTxn(spec, st, t0.Add(5*time.Second), dir)
			tx.advance()
			return tx
		}, schemas.HostInterrupted, agentStart},
		{"a stop the agent never confirmed", 1, func(spec *schemas.JobSpec, st *schemas.JobState, dir fakeDir) *txn {
			tx := newTxn(spec, st, t0.Add(3*time.Second), dir)
			tx.stop("admin", "")
			tx.advance()
			tx = newTxn(spec, st, t0.Add(3*time.Second+stopGrace+time.Second), dir)
			tx.advance()
			return tx
		}, schemas.HostStopped, agentStart},
		{"a larger job: the second its state says it began running", schemas.MaxInlineResults + 1, func(spec *schemas.JobSpec, st *schemas.JobState, dir fakeDir) *txn {
			delete(dir, "10.0.0.1")
			tx := newTxn(spec, st, t0.Add(5*time.Second), dir)
			tx.advance()
			return tx
		}, schemas.HostInterrupted, t0.Add(2 * time.Second)},
	} {
		t.Run(c.name, func(t *testing.T) {
			var ips []string
			dir := fakeDir{}
			for i := 1; i <= c.hosts; i++ {
				ip := fmt.Sprintf("10.0.0.%d", i)
				ips, dir[ip] = append(ips, ip), true
			}
			spec, st := newJob(t, 0, ips...)
			newTxn(spec, st, t0, dir).advance()
			tx := newTxn(spec, st, t0.Add(2*time.Second), dir)
			tx.apply(started)
			if c.end == nil {
				tx.apply(interrupted)
			} else {
				tx.advance()
				tx = c.end(spec, st, dir)
			}
			if got := st.Steps[0].Hosts.Status[0]; got != c.status {
				t.Fatalf("host 0: got %s, want %s", got, c.status)
			}
			if len(tx.results) == 0 || tx.results[0].Index != 0 {
				t.Fatalf("results: %+v, want host 0's", tx.results)
			}
			r := tx.results[0]
			if !r.StartedAt.Equal(c.wantStart) {
				t.Errorf("started_at: got %v, want %v", r.StartedAt, c.wantStart)
			}
			if row := tx.row(unit{idx: 0}); !row.StartedAt.Equal(c.wantStart) {
				t.Errorf("cache row: %+v, want host 0 started at %v", row, c.wantStart)
			}
			if c.hosts == 1 && r.AgentID != started.AgentID {
				t.Errorf("agent: got %q, want %q", r.AgentID, started.AgentID)
			}
		})
	}
}
