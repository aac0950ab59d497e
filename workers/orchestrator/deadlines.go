package orchestrator

// This file holds the deadlines that end a unit when no report comes in
// time: no agent, a task never started, a run past its timeout, an agent
// gone, a stop the agent never confirmed.

import (
	"fmt"
	"time"

	"github.com/fleetjob/fleetjob/schemas"
)

// Deadline slack around agents and stops.
const (
	startSlack = 30 * time.Second // NotAfter = dispatch + agent wait + startSlack
	reportLag  = 15 * time.Second // time for a report to travel back
	stopGrace  = 15 * time.Second // running hosts of a stopped job wait this long for the agent's word
	runSlack   = 60 * time.Second // a running host with no result past timeout + runSlack ends as timeout
)

// expire ends units whose deadlines passed. The sweeper skips a job until
// the first of them (dueAt, sweepdue.go): a new deadline goes in both.
func (t *txn) expire(step int) {
	for _, phase := range t.phases(step) {
		t.expireTable(step, phase)
	}
}

func (t *txn) expireTable(step int, phase string) {
	spec := t.spec.Steps[step]
	tab := t.table(step, phase)
	wait := time.Duration(t.spec.AgentWait) * time.Second
	for i, s := range tab.Status {
		if s.Final() {
			continue
		}
		u := unit{step: step, idx: i, phase: phase}
		age := t.now.Sub(t.st.At(tab.Since[i]))
		switch {
		case t.st.Status == schemas.JobStopping && t.now.Sub(t.st.StopAt) > stopGrace:
			t.finalize(u, schemas.HostStopped, schemas.ReasonNoTerminateAck)
		case s == schemas.HostWaitingAgent && age > wait:
			t.finalize(u, schemas.HostAgentOffline, fmt.Sprintf("no online agent served the host within %s", wait))
		case s == schemas.HostDispatched && age > wait+startSlack+reportLag:
			t.finalize(u, schemas.HostAgentOffline, "the agent did not start the task in time")
		case s == schemas.HostRunning:
			if t.dir.Gone(t.host(u), t.now) {
				t.finalize(u, schemas.HostInterrupted, "the agent went offline while the task ran")
			} else if age > spec.StepTimeout()+runSlack {
				t.finalize(u, schemas.HostTimeout, "no result from the agent within the timeout")
			}
		}
	}
}
