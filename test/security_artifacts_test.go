package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/artifactrelay"
	"github.com/fleetjob/fleetjob/workers/filexfer"
)

// An agent's credentials reach nothing of the artifacts store, the
// wildcard-token trick included: a literal ">" where a permission has
// "*" would make a consumer over every chunk.
func TestNATSAgentCannotReachArtifactsStore(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obs, err := s.JS.ObjectStore(ctx, schemas.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutBytes(ctx, "deploy/secret.tgz", []byte("secret")); err != nil {
		t.Fatal(err)
	}
	var v violations
	nc := s.AgentConn(t, "a1", v.handler())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	const stream = "OBJ_" + schemas.BucketArtifacts
	chunks := "$O." + schemas.BucketArtifacts + ".C."
	meta := "$O." + schemas.BucketArtifacts + ".M."
	req := func(subj, body string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := nc.RequestWithContext(ctx, subj, []byte(body))
			return err
		}
	}
	trick := "$JS.API.CONSUMER.CREATE." + stream + ".thief." + chunks + ">"
	denied(t, &v, trick, "create a consumer over every chunk with a '>' token", req(trick,
		`{"stream_name":"`+stream+`","config":{"name":"thief","filter_subject":"`+chunks+`>","deliver_policy":"all","ack_policy":"none"}}`))
	denied(t, &v, "$JS.API.CONSUMER.CREATE."+stream, "create a consumer on the store", func(ctx context.Context) error {
		_, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Name: "thief2", FilterSubject: chunks + ">"})
		return err
	})
	directGet := "$JS.API.DIRECT.GET." + stream
	denied(t, &v, directGet, "direct-get a chunk", req(directGet, `{"next_by_subj":"`+chunks+`>","batch":10}`))
	metaGet := directGet + "." + meta + ">"
	denied(t, &v, metaGet, "direct-get every object's metadata", req(metaGet, ""))
	msgGet := "$JS.API.STREAM.MSG.GET." + stream
	denied(t, &v, msgGet, "read the store by sequence", req(msgGet, `{"seq":1}`))
	denied(t, &v, "$JS.API.STREAM.INFO."+stream, "open the store", func(ctx context.Context) error {
		_, err := js.ObjectStore(ctx, schemas.BucketArtifacts)
		return err
	})
	for _, subj := range []string{chunks + "forged", meta + "forged", chunks + ">"} {
		denied(t, &v, subj, "write "+subj, func(ctx context.Context) error {
			_, err := js.Publish(ctx, subj, []byte("forged"))
			return err
		})
	}
}

// Through the relay an agent reads only the files its own download task
// sends it, and stores only under its own upload unit's prefix; every
// refusal is counted.
func TestArtifactRelayServesOnlyTheStepsAgents(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"src=127.0.0.81", "dst=127.0.0.82", "other=127.0.0.83"}})
	dir := t.TempDir()
	src := filepath.Join(dir, "app.bin")
	content := bytes.Repeat([]byte("fleetjob artifact relay "), 40000) // about 1 MiB: several reads
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	id := submit(t, s, map[string]any{"targets": []string{"127.0.0.82"}, "steps": []any{map[string]any{"file": map[string]any{
		"sources":     []any{map[string]any{"hosts": []string{"127.0.0.81"}, "paths": []string{src}}},
		"destination": filepath.Join(dir, "out"),
	}}}}, nil)
	if sum := waitJob(t, s, id, 30*time.Second); sum.Status != schemas.JobSuccess {
		t.Fatalf("file job: %s", sum.Status)
	}
	object := filexfer.ObjectName(schemas.UploadPrefix(id, 0, 0), src)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool := schemas.DefaultPool
	dst := artifactrelay.Downloads(s.AgentConn(t, "dst"), pool, "dst", id, 0)

	// the target reads its file
	r, err := dst.Get(ctx, object)
	if err != nil {
		t.Fatalf("the target's read: %v", err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("the target read %d bytes (%v), want the %d uploaded", len(got), err, len(content))
	}

	refusedAs := func(what, reason string, err error) {
		t.Helper()
		if !errors.Is(err, artifactrelay.ErrRefused) {
			t.Errorf("%s: got %v, want refused", what, err)
			return
		}
		testenv.Eventually(t, 5*time.Second, func() bool {
			return refusedCount(t, s, "fleetjob_artifacts_refused_total", reason) >= 1
		}, "the relay to count a %s refusal", reason)
	}
	other := artifactrelay.Downloads(s.AgentConn(t, "other"), pool, "other", id, 0)
	_, err = other.Get(ctx, object)
	refusedAs("another enrolled agent reads the same object", "not_dispatched", err)
	_, err = other.GetInfo(ctx, object)
	refusedAs("another enrolled agent describes it", "not_dispatched", err)
	_, err = dst.Get(ctx, schemas.UploadPrefix(id, 0, 0)+"/etc/shadow")
	refusedAs("the target reads an object not in its step", "object_not_in_step", err)
	_, err = artifactrelay.Downloads(s.AgentConn(t, "dst"), pool, "dst", id+1000, 0).Get(ctx, object)
	refusedAs("the target reads for a job that does not exist", "unknown_job", err)

	// answers (and a read's chunks) go to the asker's inbox only
	ncDst := s.AgentConn(t, "dst")
	b, _ := json.Marshal(schemas.XferRequest{V: schemas.MessageVersion, Op: schemas.XferRead, JobID: id, Object: object, Batch: 8})
	if err := ncDst.PublishRequest(schemas.XferGetSubject(pool, "dst"), "_INBOX_AGENT.other.stolen", b); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		return refusedCount(t, s, "fleetjob_artifacts_refused_total", "bad_reply") >= 1
	}, "the relay to refuse chunks sent to another agent's inbox")

	// uploads: only the unit's source agent, only under the unit's prefix
	up := artifactrelay.Uploads(s.AgentConn(t, "src"), pool, "src", id, 0, 0)
	put := func(c *artifactrelay.Client, name string) error {
		_, err := c.Put(ctx, jetstream.ObjectMeta{Name: name}, strings.NewReader("forged"))
		return err
	}
	refusedAs("the source stores under another unit's prefix", "object_not_in_step",
		put(up, schemas.UploadPrefix(id, 0, 1)+"/x"))
	refusedAs("the source overwrites an artifact", "object_not_in_step", put(up, "deploy/tool.tgz"))
	refusedAs("the source stores under the bare prefix", "object_not_in_step", put(up, schemas.UploadPrefix(id, 0, 0)+"x/y"))
	otherUp := artifactrelay.Uploads(s.AgentConn(t, "other"), pool, "other", id, 0, 0)
	refusedAs("another agent stores for the unit", "not_dispatched", put(otherUp, object))
	if err := put(up, schemas.UploadPrefix(id, 0, 0)+"/again"); err != nil {
		t.Errorf("the source stores under its own prefix: %v", err)
	}
	if _, err := dst.Get(ctx, schemas.UploadPrefix(id, 0, 0)+"/again"); !errors.Is(err, artifactrelay.ErrRefused) {
		t.Errorf("the target reads an object its source stored outside the manifest: got %v, want refused", err)
	}
}
