package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// Case 11: a worker process SIGKILLed holding a small job's first commit
// just as the other process forwarded the job's first report to it (the
// failpoint forward-taken: the commit taken, not written). The forwarding
// worker hears nothing and its report comes back after the forward's
// wait; the dead worker's submit command comes back after the ack wait to
// the survivor, which creates the job (its task again under the same
// message id: not run again). Every job ends successful, its host ran once
// and was announced once, and nothing is a dead letter.
func TestChaosWorkerKilledHoldingAForwardedCommit(t *testing.T) {
	t.Parallel()
	const host = "127.0.1.201"
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"f1=" + host}, AckWait: 2 * time.Second,
		CreateWindow: time.Second})
	env := []string{"NATS_URL=" + s.NATSURL, "REDIS_URL=" + s.RedisURL, "FLEETJOB_ACK_WAIT=2s", "FLEETJOB_CREATE_WINDOW=1s",
		"FLEETJOB_LOG_LEVEL=error", "FLEETJOB_NATS_CREDS=" + s.NATS.CredsFile(t, natsauth.RoleWorker)}
	doomed := startProc(t, "", append(env, "FLEETJOB_FAILPOINTS=forward-taken=1"), "worker")
	s.WaitResultPullers(t, 2)
	// one-host jobs, one at a time, until the doomed worker holds one whose
	// report the other forwards (about one job in four)
	var ids []int64
	var runs []ledger
	deadline := time.Now().Add(time.Minute)
	for died := false; !died; {
		if time.Now().After(deadline) {
			t.Fatalf("no forwarded report reached the doomed worker in %d jobs", len(ids))
		}
		l := newLedger(t)
		ids, runs = append(ids, submit(t, s, script(l.append("$FLEETJOB_EXEC_ID"), host), nil)), append(runs, l)
		select {
		case <-doomed.done:
			died = true
		case <-time.After(300 * time.Millisecond):
		}
	}
	once := 0
	for i, id := range ids {
		if sum := waitJob(t, s, id, 90*time.Second); sum.Status != schemas.JobSuccess || sum.Counts["success"] != 1 {
			t.Errorf("job %d: %s %v", id, sum.Status, sum.Counts)
		}
		once += onceEach(t, s, id, 1, runs[i])
	}
	dead := deadLetters(t, s)
	t.Logf("case 11: killed holding a forwarded commit after %d jobs; %d/%d jobs ran once and were announced once; %d dead letters",
		len(ids), once, len(ids), len(dead))
	if len(dead) > 0 {
		t.Errorf("dead letters: %s", fmt.Sprint(dead))
	}
}
