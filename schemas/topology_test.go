package schemas

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/natsrv"
)

func TestEnsureLeavesExistingStreamsAlone(t *testing.T) {
	s, err := natsrv.Start(natsrv.Config{Addr: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	nc, _ := nats.Connect(s.ClientURL())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	top := DefaultTopology()
	if err := top.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	if err := top.Ensure(ctx, js); err != nil {
		t.Fatalf("second ensure: %v", err)
	}
	other := top
	other.LogMaxAge /= 2
	if err := other.Ensure(ctx, js); err != nil {
		t.Fatalf("ensure with other settings: %v", err)
	}
	st, _ := js.Stream(ctx, StreamLogs)
	if got := st.CachedInfo().Config.MaxAge; got != top.LogMaxAge {
		t.Errorf("LOGS max age changed to %s by a process with other settings", got)
	}
	for _, b := range top.Buckets() {
		if _, err := js.KeyValue(ctx, b.Bucket); err != nil {
			t.Errorf("bucket %s: %v", b.Bucket, err)
		}
	}
}
