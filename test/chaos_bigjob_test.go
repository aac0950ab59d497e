package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// Case 9: a worker SIGKILLed while it stores the results of a 20,000-host
// job expiring its hosts (no agent exists for any of them; a failpoint
// after the 5th of its 79 result segments), and another worker started:
// the job ends with every host agent_offline and each host announced once
// (the dead worker's partial writes are merged again, not doubled).
func TestChaosWorkerKilledWhileExpiringBigJob(t *testing.T) {
	t.Parallel()
	const hosts = 20_000
	s := testenv.Start(t, testenv.Options{AckWait: 2 * time.Second})
	env := []string{"NATS_URL=" + s.NATSURL, "REDIS_URL=" + s.RedisURL, "FLEETJOB_ACK_WAIT=2s", "FLEETJOB_LOG_LEVEL=error",
		"FLEETJOB_NATS_CREDS=" + s.NATS.CredsFile(t, natsauth.RoleWorker)}
	doomed := startProc(t, "", append(env, "FLEETJOB_FAILPOINTS=results-stored=5"), "worker")
	s.WaitResultPullers(t, 1)
	targets := make([]string, hosts)
	for i := range targets {
		targets[i] = fmt.Sprintf("10.203.%d.%d", i/250, i%250+1)
	}
	body := script("true", targets...)
	body["agent_wait"] = 2
	id := submit(t, s, body, nil)
	select {
	case <-doomed.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the worker never reached results-stored #5")
	}
	startProc(t, "", env, "worker")
	sum := waitJob(t, s, id, 3*time.Minute)
	announced := hostEventsOnce(t, s, id, hosts)
	t.Logf("case 9: a worker killed after storing 5 of the 79 result segments of %d expired hosts; job %s %v; %d host.finished events",
		hosts, sum.Status, sum.Counts, announced)
	if sum.Counts["agent_offline"] != hosts || !schemas.JobFinal(sum.Status) {
		t.Errorf("job %s %v; want every host agent_offline", sum.Status, sum.Counts)
	}
	if announced != hosts {
		t.Errorf("%d host.finished events, want %d (each host once)", announced, hosts)
	}
}

// Case 10: a job no worker can move (a failpoint fails every report and
// kick the worker processes) ends failed, with the reason, once its
// sweeper kick has used its deliveries and become a dead letter: it does
// not loop.
func TestChaosJobThatCannotProgressEnds(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{AckWait: 2 * time.Second})
	env := []string{"NATS_URL=" + s.NATSURL, "REDIS_URL=" + s.RedisURL, "FLEETJOB_ACK_WAIT=2s", "FLEETJOB_LOG_LEVEL=error",
		"FLEETJOB_NATS_CREDS=" + s.NATS.CredsFile(t, natsauth.RoleWorker), "FLEETJOB_FAILPOINTS=process=1:fail"}
	startProc(t, "", env, "worker")
	s.WaitResultPullers(t, 1)
	body := script("true", "10.204.0.1", "10.204.0.2", "10.204.0.3")
	body["agent_wait"] = 1
	id := submit(t, s, body, nil)
	sum := waitJob(t, s, id, 2*time.Minute)
	var dead struct {
		Items []schemas.DeadLetter `json:"items"`
	}
	s.JSON(t, "GET", "/v1/deadletters", nil, nil, &dead)
	kicks := 0
	for _, d := range dead.Items {
		if from, err := schemas.ParseResultSubject(d.Subject); err == nil && d.JobID == id && from.Sweeper {
			kicks++
		}
	}
	t.Logf("case 10: a job whose every kick fails: %s (%q) after its kick became a dead letter (%d)", sum.Status, sum.Reason, kicks)
	if sum.Status != schemas.JobFailed || !strings.Contains(sum.Reason, "could not make progress") || kicks < 1 {
		t.Errorf("job %s %q with %d dead-lettered kicks; want failed, saying it could not make progress", sum.Status, sum.Reason, kicks)
	}
}
