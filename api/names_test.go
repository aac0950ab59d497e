package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/internal/natsrv/natstest"
	"github.com/fleetjob/fleetjob/schemas"
)

// A named submission takes its name in one round trip and is still
// unique: a name recorded long ago (outside the command stream's
// duplicate window) is refused from memory, one taken within the window
// by the publish itself, and each is recorded in the bucket afterwards.
func TestNamedSubmissionsStayUnique(t *testing.T) {
	js, err := jetstream.New(natstest.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if err := schemas.DefaultTopology().Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, schemas.BucketNames)
	if err != nil {
		t.Fatal(err)
	}
	old := NameClaim("octans", "nightly")
	if _, err := kv.Create(ctx, old.key, []byte("42")); err != nil { // as if claimed last month
		t.Fatal(err)
	}
	names, err := NewWatchedNames(ctx, js, kv, []string{"octans"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c := NewCore("tok", Deps{Claims: names, Publisher: JetStreamPublisher{JS: js}, Registry: prometheus.NewRegistry(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	actx := WithPrincipal(ctx, &Principal{Actor: "admin", Role: RoleAdmin, Kind: KindAdminToken})
	submit := func(name string) (int64, error) {
		spec := scriptSpec(nil, "")
		spec.Targets = []schemas.Host{{IP: "10.0.0.1"}}
		id, _, err := c.Submit(actx, spec, NameClaim("octans", name))
		return id, err
	}
	if id, err := submit("nightly"); !errors.Is(err, schemas.ErrConflict) || id != 42 {
		t.Fatalf("a name recorded long ago: job %d, %v; want a conflict with job 42", id, err)
	}
	first, err := submit("weekly")
	if err != nil {
		t.Fatal(err)
	}
	// another API process, whose memory has not seen it: the publish's
	// duplicate answer refuses it
	other, err := NewWatchedNames(ctx, js, kv, []string{"octans"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	other.mu.Lock()
	delete(other.held, NameClaim("octans", "weekly").key)
	other.mu.Unlock()
	c2 := NewCore("tok", Deps{Claims: other, Publisher: JetStreamPublisher{JS: js}, Registry: prometheus.NewRegistry(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	spec := scriptSpec(nil, "")
	spec.Targets = []schemas.Host{{IP: "10.0.0.1"}}
	if id, _, err := c2.Submit(actx, spec, NameClaim("octans", "weekly")); !errors.Is(err, schemas.ErrConflict) || id != first {
		t.Fatalf("the same name through another process within the window: job %d, %v; want a conflict with job %d", id, err, first)
	}
	// recorded in the bucket for good (Wait: what a shutting-down API does)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	names.Wait(wctx)
	if h, found, err := names.Lookup(ctx, NameClaim("octans", "weekly").key); err != nil || !found || h.ID != first {
		t.Fatalf("recorded holder %d (%v, %v), want %d", h.ID, found, err, first)
	}
	if id, found, err := c.Resolve(actx, NameClaim("octans", "weekly")); err != nil || !found || id != first {
		t.Errorf("resolve: %d %v %v", id, found, err)
	}
}

// Claims recorded in a burst are written in batches, every one of them; a
// name the bucket holds already keeps its holder.
func TestRecordedNamesWrittenInBatches(t *testing.T) {
	js, err := jetstream.New(natstest.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := schemas.DefaultTopology().Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, schemas.BucketNames)
	if err != nil {
		t.Fatal(err)
	}
	taken := NameClaim("octans", "taken").key
	if _, err := kv.Create(ctx, taken, []byte("7")); err != nil {
		t.Fatal(err)
	}
	names, err := NewWatchedNames(ctx, js, kv, []string{"octans"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	const n = 3*recordBatch + 5
	for i := range n {
		names.Record(NameClaim("octans", fmt.Sprintf("burst-%d", i)).key, int64(1000+i))
	}
	names.Record(taken, 99) // a race lost to another process
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	names.Wait(wctx)
	for i := range n {
		if h, found, err := names.Lookup(ctx, NameClaim("octans", fmt.Sprintf("burst-%d", i)).key); err != nil || !found || h.ID != int64(1000+i) {
			t.Fatalf("burst-%d: holder %d (%v, %v)", i, h.ID, found, err)
		}
	}
	if h, _, err := names.Lookup(ctx, taken); err != nil || h.ID != 7 {
		t.Errorf("a name held already went to %d (%v), want 7", h.ID, err)
	}
}
