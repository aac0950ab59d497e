package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/natsrv/natstest"
	"github.com/fleetjob/fleetjob/schemas"
)

// A chunk whose publish got no answer (its request lost while a stream
// leader was being elected) is sent again, each attempt waiting a bounded
// time: one lost request must not use up Close's whole wait and leave the
// log without its final chunk. Here the LOGS subject first reaches a
// subscriber that never answers; the stream appears once two publishes
// are lost; Close has 20 s.
func TestCloseResendsWithBoundedAttempts(t *testing.T) {
	nc := natstest.Conn(t)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	task := &schemas.Task{JobID: 1, Step: 0, Host: 0, Attempt: 1, ExecID: "1.0.0.1"}
	subject := schemas.LogRef{Job: task.JobID, Step: task.Step, Phase: task.Phase, Host: task.Host, Attempt: task.Attempt,
		Pool: schemas.DefaultPool, Agent: "a1"}.Subject()
	lost := make(chan struct{}, 64)
	black, err := nc.Subscribe(subject, func(*nats.Msg) { lost <- struct{}{} }) // takes every publish, answers none
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// the outage ends once two publishes are lost: the chunk's own and a
	// resend's, which must not have waited out Close's whole 20 s
	outage := make(chan error, 1)
	go func() {
		for range 2 {
			select {
			case <-lost:
			case <-ctx.Done():
				outage <- ctx.Err()
				return
			}
		}
		if err := black.Unsubscribe(); err != nil {
			outage <- err
			return
		}
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "LOGS", Subjects: []string{"fleetjob.log.>"}})
		outage <- err
	}()

	l := newLogStream(js, subject, task, nil)
	l.attempt = 500 * time.Millisecond
	for i := range 3 {
		l.Line(fmt.Sprintf("line %d", i))
	}
	start := time.Now()
	n, err := l.Close(ctx)
	if err != nil {
		t.Fatalf("Close after %s: %v", time.Since(start).Round(time.Millisecond), err)
	}
	if err := <-outage; err != nil { // ended before Close could succeed
		t.Fatalf("outage: %v", err)
	}
	if n != 3 {
		t.Fatalf("Close counted %d lines, want 3", n)
	}
	st, err := js.Stream(context.Background(), "LOGS")
	if err != nil {
		t.Fatal(err)
	}
	last, err := st.GetLastMsgForSubject(context.Background(), subject)
	if err != nil {
		t.Fatal(err)
	}
	if last.Header.Get(schemas.HdrFinal) != "1" {
		t.Fatalf("the log's last chunk is not final: %v", last.Header)
	}
	first, err := st.GetMsg(context.Background(), 1)
	if err != nil || !strings.HasPrefix(string(first.Data), "line 0\nline 1\nline 2") {
		t.Fatalf("first stored chunk %q, %v: want the three lines", first.Data, err)
	}
}
