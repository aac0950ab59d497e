package agent_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
)

// A short task that asks for it (InlineLog) reports its output in its
// finished report and publishes no LOGS message; the report is journaled
// with its log, so the agent's next life answers a redelivery of the task
// with the same report, log included.
func TestInlineLogRidesInTheReport(t *testing.T) {
	js := testenv.JetStream(t)
	top := schemas.DefaultTopology()
	if err := top.Ensure(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(t.Context(), schemas.StreamTasks, top.AgentConsumerConfig("a1", 4)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	run := func() (stop func()) {
		a, err := agent.New(agent.Config{ID: "a1", IP: "127.0.0.1", DataDir: dir, Slots: 4, Topology: top},
			js.Conn(), js, agent.NewMetrics(prometheus.NewRegistry()), testenv.Logger())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := testenv.Go(func() error { return a.Run(ctx) })
		return func() {
			cancel()
			testenv.Returned(t, done, 20*time.Second, "Run")
		}
	}
	task := schemas.Task{V: 1, ExecID: schemas.ExecID(1, 0, 0, 1), JobID: 1, Attempt: 1, InlineLog: true,
		Target: schemas.Host{IP: "127.0.0.1"}, Kind: schemas.StepScript,
		Script:  &schemas.Script{Content: "echo hi; echo; echo there >&2", Interpreter: "bash"},
		Timeout: 10, NotAfter: time.Now().Add(time.Minute)}
	send := func() {
		b, _ := json.Marshal(task)
		if _, err := js.Publish(t.Context(), schemas.TaskSubject(schemas.DefaultPool, "a1", 1), b); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, rep schemas.Report) {
		t.Helper()
		if rep.Status != schemas.HostSuccess || rep.Lines != 3 || rep.Log == nil || *rep.Log != "hi\n\nthere" {
			log := "nil"
			if rep.Log != nil {
				log = *rep.Log
			}
			t.Errorf("%s: %s with %d lines, log %q; want success, 3 lines, log \"hi\\n\\nthere\"", what, rep.Status, rep.Lines, log)
		}
	}

	stop := run()
	send()
	results, err := js.Stream(t.Context(), schemas.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	var rep schemas.Report
	testenv.Eventually(t, 20*time.Second, func() bool {
		m, err := results.GetLastMsgForSubject(t.Context(), schemas.StoredResultSubject(schemas.DefaultPool, "a1", 1, schemas.DefaultTopology().ResultPartitions))
		return err == nil && json.Unmarshal(m.Data, &rep) == nil && rep.Kind == schemas.ReportFinished
	}, "the script's finished report")
	check("report", rep)
	logs, err := js.Stream(t.Context(), schemas.StreamLogs)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := logs.Info(t.Context()); err != nil || info.State.Msgs != 0 {
		t.Errorf("LOGS holds %d messages (%v), want none", info.State.Msgs, err)
	}
	stop()

	// the agent's next life: the task delivered again is answered from
	// the journal (the stream drops the repeated report by its id; a core
	// subscriber sees it sent)
	again := make(chan schemas.Report, 1)
	sub, err := js.Conn().Subscribe(schemas.ResultSubject(schemas.DefaultPool, "a1", 1), func(m *nats.Msg) {
		var r schemas.Report
		if json.Unmarshal(m.Data, &r) == nil && r.Kind == schemas.ReportFinished {
			again <- r
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	stop = run()
	defer stop()
	send()
	select {
	case r := <-again:
		check("report of the redelivered task", r)
	case <-time.After(20 * time.Second):
		t.Fatal("no report of the redelivered task")
	}
	if info, err := logs.Info(t.Context()); err != nil || info.State.Msgs != 0 {
		t.Errorf("LOGS holds %d messages (%v) after the redelivery, want none", info.State.Msgs, err)
	}
}
