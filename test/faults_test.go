package test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// hostFinishedEvents counts host.finished events of a job by execution.
func hostFinishedEvents(t *testing.T, s *testenv.System, id int64) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, d := range jobEvents(t, s, id, events.HostFinished) {
		out[d.ID]++
	}
	return out
}

// jobEvents reads the events of one kind ("*": every kind) about a job,
// unpacking batches: every copy the EVENTS stream holds.
func jobEvents(t *testing.T, s *testenv.System, id int64, kind string) []events.Decoded {
	t.Helper()
	ctx := context.Background()
	st, err := s.JS.Stream(ctx, schemas.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	subject := "fleetjob.event.*.*." + fmt.Sprint(id)
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var out []events.Decoded
	for {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			all, err := events.DecodeAll(m.Headers(), m.Data())
			if err != nil {
				t.Fatalf("event: %v", err)
			}
			for _, d := range all {
				if kind == "*" || d.Type == events.TypePrefix+kind {
					out = append(out, d)
				}
			}
		}
		if n == 0 {
			return out
		}
	}
}

func TestWorkerKilledMidJob(t *testing.T) {
	t.Parallel()
	var agents []string
	var ips []string
	for i := 11; i <= 16; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		agents, ips = append(agents, fmt.Sprintf("w%d=%s", i, ip)), append(ips, ip)
	}
	s := testenv.Start(t, testenv.Options{Agents: agents, AckWait: 3 * time.Second})
	env := []string{"NATS_URL=" + s.NATSURL, "REDIS_URL=" + s.RedisURL, "FLEETJOB_ACK_WAIT=3s", "FLEETJOB_LOG_LEVEL=warn",
		"FLEETJOB_NATS_CREDS=" + s.NATS.CredsFile(t, natsauth.RoleWorker)}
	w1 := startProc(t, "", env, "worker", "--workers", "2")
	w2 := startProc(t, "", env, "worker", "--workers", "2")
	s.WaitResultPullers(t, 2)

	l := newLedger(t)
	body := script(l.append("$FLEETJOB_EXEC_ID")+"; sleep 0.3", ips...)
	body["concurrency"] = 2
	id := submit(t, s, body, nil)
	testenv.Eventually(t, 30*time.Second, func() bool { return job(t, s, id).Counts["success"] >= 2 }, "two hosts done")
	w1.kill()
	sum := waitJob(t, s, id, 60*time.Second)
	if sum.Status != schemas.JobSuccess || sum.Counts["success"] != len(ips) {
		t.Fatalf("got %s %v, want success on %d hosts", sum.Status, sum.Counts, len(ips))
	}
	onceEach(t, s, id, len(ips), l)
	w2.stop(t, 15*time.Second)
}

func TestAgentKilledMidTask(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, TaskAckWait: 2 * time.Second})
	dir := t.TempDir()
	env := []string{"NATS_URL=" + s.NATSURL, "FLEETJOB_TASK_ACK_WAIT=2s", "FLEETJOB_LOG_LEVEL=warn",
		"FLEETJOB_NATS_CREDS=" + s.AgentCredsFile(t, "pa", filepath.Join(dir, "agent-data"))}
	// a relative data dir: scripts run elsewhere, so the agent must not care
	args := []string{"agent", "--id", "pa", "--ip", "127.0.0.21", "--data-dir", "agent-data"}
	s.Enrol(t, "pa", "127.0.0.21", filepath.Join(dir, "agent-data"), "")
	a := startProc(t, dir, env, args...)
	s.WaitAgent(t, "pa")

	l := newLedger(t)
	marker := fmt.Sprintf("fj-orphan-%d", time.Now().UnixNano())
	id := submit(t, s, script(l.append("start")+"; exec -a "+marker+" sleep 60", "127.0.0.21"), nil)
	waitStatus(t, s, id, "127.0.0.21", schemas.HostRunning, 20*time.Second)
	running := hostByIP(t, s, id, "127.0.0.21")
	a.kill()
	if out, _ := exec.Command("pgrep", "-f", marker).Output(); len(out) == 0 {
		t.Fatal("the script died with the agent; the test needs it orphaned")
	}
	startProc(t, dir, env, args...)
	waitStatus(t, s, id, "127.0.0.21", schemas.HostInterrupted, 20*time.Second)
	h := hostByIP(t, s, id, "127.0.0.21")
	if !strings.Contains(h.Error, "restarted") {
		t.Errorf("interrupted host: error %q should say the agent restarted", h.Error)
	}
	if running.StartedAt.IsZero() || !h.StartedAt.Equal(running.StartedAt) {
		t.Errorf("interrupted host: started_at %v, want %v as while it ran", h.StartedAt, running.StartedAt)
	}
	if sum := waitJob(t, s, id, 10*time.Second); sum.Status != schemas.JobFailed {
		t.Errorf("job: got %s, want failed", sum.Status)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		out, _ := exec.Command("pgrep", "-f", marker).Output()
		return len(out) == 0
	}, "the orphaned process group to be killed")
	// the unacked delivery comes back after the ack wait and must be acked
	// without running again (a second run would hold it 60 s)
	testenv.Eventually(t, 30*time.Second, func() bool { return tasksSettled(t, s) || len(l.lines(t)) > 1 },
		"the redelivered task acked, or run again")
	if got := l.lines(t); len(got) != 1 {
		t.Errorf("script started %d times, want once", len(got))
	}
	// and the restarted agent still works
	next := submit(t, s, script("echo again", "127.0.0.21"), nil)
	if sum := waitJob(t, s, next, 20*time.Second); sum.Status != schemas.JobSuccess {
		t.Errorf("next job on the restarted agent: %s", sum.Status)
	}
}
