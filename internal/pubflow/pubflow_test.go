package pubflow

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/fleetjob/fleetjob/internal/natsrv/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// stream starts an authenticated server and a stream, and returns a
// JetStream context whose connection allows only maxPending outstanding
// async publishes.
func stream(t *testing.T, maxPending int) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	js, err := jetstream.New(natstest.Conn(t), jetstream.WithPublishAsyncMaxPending(maxPending))
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	return js, st
}

// noStall makes a publish over the connection's limit fail at once
// (nats.go waits up to 200 ms by default), so the windows' own waiting is
// what the test exercises.
var noStall = jetstream.WithStallWait(time.Microsecond)

// The connection's limit is reached at once without a window (what made
// a 20,000-host commit fail and be redone whole); through windows, even
// four at once sharing the connection, every message is stored.
func TestWindowsWaitInsteadOfStalling(t *testing.T) {
	js, st := stream(t, 16)
	var stalled bool
	var raw []jetstream.PubAckFuture
	for i := range 2000 {
		f, err := js.PublishAsync(fmt.Sprintf("s.raw.%d", i), []byte("x"), noStall)
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			stalled = true
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		raw = append(raw, f)
	}
	if !stalled {
		t.Fatal("2,000 unwindowed publishes never stalled: the test shows nothing")
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(10 * time.Second):
		t.Fatal("raw publishes not acknowledged")
	}

	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for p := range 4 {
		wg.Go(func() {
			w := New(js, 64, noStall) // each window alone is over the connection's 16
			for i := range 2000 {
				if err := w.PublishData(ctx, fmt.Sprintf("s.w%d.%d", p, i), []byte("x")); err != nil {
					errs <- err
					return
				}
			}
			errs <- w.Wait(ctx)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(len(raw) + 4*2000); info.State.Msgs != want {
		t.Fatalf("stream holds %d messages, want %d", info.State.Msgs, want)
	}
}

// A refused publish is reported, not waited on forever.
func TestWindowReportsAFailedAck(t *testing.T) {
	js, _ := stream(t, 16)
	w := New(js, 4)
	if err := w.PublishData(t.Context(), "nowhere.x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := w.Wait(ctx); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish to a subject no stream holds: %v", err)
	}
}
