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

// CloseInline hands back a log none of whose chunks was sent and whose
// lines fit in the task's bound (schemas.MaxInlineLog, or a larger job's
// smaller InlineMax), joined as its one chunk would
// have carried them, and publishes nothing; any other log it closes as
// Close does, into LOGS.
func TestCloseInline(t *testing.T) {
	js, err := jetstream.New(natstest.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "LOGS", Subjects: []string{"fleetjob.log.>"}})
	if err != nil {
		t.Fatal(err)
	}
	wide := strings.Repeat("w", schemas.MaxInlineLog/2)
	seg := strings.Repeat("s", schemas.MaxSegmentInlineLog)
	for i, c := range []struct {
		name      string
		max       int // the task's InlineMax
		sensitive bool
		write     func(l *logStream)
		lines     int
		inline    *string
		chunks    int // LOGS messages of the execution
	}{
		{"three lines", 0, false, func(l *logStream) {
			l.Line("a")
			l.Line("")
			l.Line("c")
		}, 3, ptr("a\n\nc"), 0},
		{"no output", 0, false, func(*logStream) {}, 0, ptr(""), 0},
		{"one empty line", 0, false, func(l *logStream) { l.Line("") }, 1, ptr(""), 0},
		{"exactly the cap", 0, false, func(l *logStream) {
			l.Line(wide)
			l.Line(wide[1:])
		}, 2, ptr(wide + "\n" + wide[1:]), 0},
		{"a byte past the cap", 0, false, func(l *logStream) {
			l.Line(wide)
			l.Line(wide)
		}, 2, nil, 1},
		{"a chunk already sent", 0, false, func(l *logStream) {
			l.Line("a")
			l.mu.Lock()
			l.flushLocked(false) // what the 200 ms tick does
			l.mu.Unlock()
			l.Line("b")
		}, 2, nil, 2},
		{"a chunk already sent, nothing after it", 0, false, func(l *logStream) {
			l.Line("a")
			l.mu.Lock()
			l.flushLocked(false)
			l.mu.Unlock()
		}, 1, nil, 2},
		{"a larger job's bound, exactly", schemas.MaxSegmentInlineLog, false, func(l *logStream) { l.Line(seg) }, 1, ptr(seg), 0},
		{"a larger job's bound, a byte past it", schemas.MaxSegmentInlineLog, false, func(l *logStream) { l.Line(seg + "s") }, 1, nil, 1},
		{"a bound past MaxInlineLog is MaxInlineLog's", 4 * schemas.MaxInlineLog, false, func(l *logStream) {
			l.Line(wide)
			l.Line(wide)
		}, 2, nil, 1},
		{"sensitive values masked", 0, true, func(l *logStream) { l.Line("token=s3cret") }, 1, ptr("token=******"), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			task := &schemas.Task{JobID: 20, Host: i, Attempt: 1, ExecID: schemas.ExecID(20, 0, i, 1), InlineLog: true, InlineMax: c.max,
				Script: &schemas.Script{Content: "true", Sensitive: c.sensitive, Env: map[string]string{"TOKEN": "s3cret"}}}
			subject := schemas.LogRef{Job: task.JobID, Host: task.Host, Attempt: 1, Pool: schemas.DefaultPool, Agent: "a1"}.Subject()
			l := newLogStream(js, subject, task, nil)
			l.mu.Lock()
			l.timer.Stop() // no tick: the case says what was sent
			l.mu.Unlock()
			c.write(l)
			lines, inline, err := l.CloseInline(ctx, task.InlineLimit())
			if err != nil {
				t.Fatal(err)
			}
			if lines != c.lines {
				t.Errorf("lines: got %d, want %d", lines, c.lines)
			}
			if (inline == nil) != (c.inline == nil) || (inline != nil && *inline != *c.inline) {
				t.Errorf("inline log: got %v, want %v", deref(inline), deref(c.inline))
			}
			info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
			if err != nil {
				t.Fatal(err)
			}
			if got := int(info.State.Subjects[subject]); got != c.chunks {
				t.Errorf("LOGS messages: got %d, want %d", got, c.chunks)
			}
			if c.chunks > 0 {
				last, err := st.GetLastMsgForSubject(ctx, subject)
				if err != nil || last.Header.Get(schemas.HdrFinal) != "1" {
					t.Errorf("the last chunk is not final: %v %v", last, err)
				}
			}
		})
	}
}

func ptr(s string) *string { return &s }

func deref(s *string) string {
	if s == nil {
		return "nil"
	}
	return fmt.Sprintf("%q", *s)
}
