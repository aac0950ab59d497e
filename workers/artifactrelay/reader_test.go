package artifactrelay_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/artifactrelay"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nats.go v1.55's own leak in ObjectStore.Put (see filexfer's main_test.go)
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"))
}

// A read whose request is lost is asked for again from the last chunk
// received, and the object arrives whole. The test plays the relay: it
// answers info and serves reads the way the relay does, but drops one.
func TestReaderAsksAgainWhenAReadIsLost(t *testing.T) {
	n := testenv.NATS(t)
	nc := n.Connect(t, natsauth.RoleAdmin, nats.CustomInboxPrefix(natsauth.AgentInboxPrefix("a1")))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: schemas.BucketArtifacts})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 9<<20+12345) // 73 chunks: reads of 32, 32 and 9
	_, _ = rand.Read(data)
	const object = "job/1/0/u0/data.bin"
	info, err := obs.PutBytes(ctx, object, data)
	if err != nil {
		t.Fatal(err)
	}
	var reads atomic.Int32
	sub, err := nc.Subscribe(schemas.XferGetSubject(schemas.DefaultPool, "a1"), func(m *nats.Msg) {
		var req schemas.XferRequest
		_ = json.Unmarshal(m.Data, &req)
		switch req.Op {
		case schemas.XferInfo:
			b, _ := json.Marshal(schemas.XferObject{Object: info.Name, NUID: info.NUID, Size: info.Size, Chunks: info.Chunks, Digest: info.Digest})
			_ = m.Respond(b)
		case schemas.XferRead:
			if reads.Add(1) == 2 {
				return // lost
			}
			get, _ := json.Marshal(map[string]any{"seq": req.After + 1, "next_by_subj": "$O." + schemas.BucketArtifacts + ".C." + info.NUID,
				"batch": req.Batch})
			_ = nc.PublishMsg(&nats.Msg{Subject: "$JS.API.DIRECT.GET.OBJ_" + schemas.BucketArtifacts, Reply: m.Reply, Data: get})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	r, err := artifactrelay.Downloads(nc, schemas.DefaultPool, "a1", 1, 0).Get(ctx, object)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read after a lost read: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, not the %d stored", len(got), len(data))
	}
	if n := reads.Load(); n < 4 {
		t.Errorf("%d reads asked for, want at least 4 (3 batches, one of them twice)", n)
	}
}
