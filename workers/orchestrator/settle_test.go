package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fleetjob/fleetjob/schemas"
)

// settledMsg is a delivered message that records how it was settled.
type settledMsg struct {
	jetstream.Msg
	subject   string
	delivered uint64
	nak       time.Duration
	naked     bool
	termed    bool
}

func (m *settledMsg) Subject() string { return m.subject }
func (m *settledMsg) Data() []byte    { return []byte(`{}`) }
func (m *settledMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Stream: schemas.StreamResults, NumDelivered: m.delivered,
		Sequence: jetstream.SequencePair{Stream: 9}}, nil
}
func (m *settledMsg) NakWithDelay(d time.Duration) error { m.nak, m.naked = d, true; return nil }
func (m *settledMsg) Term() error                        { m.termed = true; return nil }

// deadBucket records the dead letters put in it.
type deadBucket struct {
	jetstream.KeyValue
	puts map[string][]byte
}

func (k *deadBucket) Put(_ context.Context, key string, v []byte) (uint64, error) {
	k.puts[key] = v
	return uint64(len(k.puts)), nil
}

// A report whose job's first commit is not written yet comes back sooner
// then later (50 ms doubling up to 5 s), counted, and after 60 deliveries
// (over four minutes) is a dead letter that says why, not retried forever
// (reports have no delivery limit of their own).
func TestReportOfAJobNeverCreatedEndsAsADeadLetter(t *testing.T) {
	dead := &deadBucket{puts: map[string][]byte{}}
	w := &Worker{dead: dead, m: NewMetrics(prometheus.NewRegistry()), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	cause := fmt.Errorf("job 42: %w", errNotCreated)
	subject := schemas.ResultSubject(schemas.DefaultPool, "a1", 42)
	var waited time.Duration
	for n, want := range map[uint64]time.Duration{1: 50 * time.Millisecond, 2: 100 * time.Millisecond, 5: 800 * time.Millisecond, 8: 5 * time.Second, 59: 5 * time.Second} {
		m := &settledMsg{subject: subject, delivered: n}
		w.settle(m, cause)
		if !m.naked || m.nak != want || m.termed {
			t.Errorf("delivery %d: nak %v (%v), termed %v; want a nak after %v", n, m.naked, m.nak, m.termed, want)
		}
	}
	for n := uint64(1); n < 60; n++ {
		waited += notCreatedDelay(&settledMsg{delivered: n})
	}
	if waited < 4*time.Minute {
		t.Errorf("59 deliveries wait %v in all, want over four minutes", waited)
	}
	var early dto.Metric
	if err := w.m.EarlyReports.Write(&early); err != nil {
		t.Fatal(err)
	}
	if got := early.GetCounter().GetValue(); got != 5 {
		t.Errorf("early reports counted %v, want 5", got)
	}
	if len(dead.puts) != 0 {
		t.Fatalf("dead letters before the last delivery: %v", dead.puts)
	}
	last := &settledMsg{subject: subject, delivered: 60}
	w.settle(last, cause)
	if !last.termed || last.naked {
		t.Fatalf("delivery 60: termed %v, naked %v; want it terminated", last.termed, last.naked)
	}
	b, ok := dead.puts[schemas.StreamResults+".9"]
	if !ok {
		t.Fatalf("no dead letter recorded: %v", dead.puts)
	}
	var dl schemas.DeadLetter
	if err := json.Unmarshal(b, &dl); err != nil {
		t.Fatal(err)
	}
	if dl.Deliveries != 60 || dl.Subject != subject || !strings.Contains(dl.Reason, errNotCreated.Error()) {
		t.Errorf("dead letter %+v, want 60 deliveries of %s saying %q", dl, subject, errNotCreated)
	}
}
