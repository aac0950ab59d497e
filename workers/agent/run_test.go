package agent_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
)

// An agent that ran a script (following its spool file) and was stopped
// leaves no goroutine behind: its spool watcher, executions and task
// consumer all end with Run.
func TestRunLeavesNoGoroutineBehind(t *testing.T) {
	js := testenv.JetStream(t)
	top := schemas.DefaultTopology()
	if err := top.Ensure(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	// the consumer's goroutines in the server are not the agent's
	if _, err := js.CreateOrUpdateConsumer(t.Context(), schemas.StreamTasks, top.AgentConsumerConfig("a1", 4)); err != nil {
		t.Fatal(err)
	}
	// nor is the client's async-publish reply subscription, made at its
	// first asynchronous publish and kept for the connection's life
	f, err := js.PublishAsync(schemas.LogSubject(0, 0, 0, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	<-f.Ok()
	before := goleak.IgnoreCurrent()

	a, err := agent.New(agent.Config{ID: "a1", IP: "127.0.0.1", DataDir: t.TempDir(), Slots: 4, Topology: top},
		js.Conn(), js, agent.NewMetrics(prometheus.NewRegistry()), testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := testenv.Go(func() error { return a.Run(ctx) })
	task := schemas.Task{V: 1, ExecID: schemas.ExecID(1, 0, 0, 1), JobID: 1, Attempt: 1,
		Target: schemas.Host{IP: "127.0.0.1"}, Kind: schemas.StepScript, Script: &schemas.Script{Content: "echo hi", Interpreter: "bash"},
		Timeout: 10, NotAfter: time.Now().Add(time.Minute)}
	b, _ := json.Marshal(task)
	if _, err := js.Publish(t.Context(), schemas.TaskSubject(schemas.DefaultPool, "a1", 1), b); err != nil {
		t.Fatal(err)
	}
	results, err := js.Stream(t.Context(), schemas.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	var rep schemas.Report
	testenv.Eventually(t, 20*time.Second, func() bool {
		m, err := results.GetLastMsgForSubject(t.Context(), schemas.StoredResultSubject(schemas.DefaultPool, "a1", 1, schemas.DefaultTopology().ResultPartitions))
		return err == nil && json.Unmarshal(m.Data, &rep) == nil && rep.Kind == schemas.ReportFinished
	}, "the script's finished report")
	if rep.Status != schemas.HostSuccess || rep.Lines != 1 {
		t.Errorf("report: %s with %d lines (%s), want success with 1", rep.Status, rep.Lines, rep.Error)
	}
	cancel()
	testenv.Returned(t, done, 20*time.Second, "Run")
	goleak.VerifyNone(t, before)
}
