package statuscache_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/statuscache"
)

type fixture struct {
	cache *statuscache.Cache
	kv    jetstream.KeyValue
	js    jetstream.JetStream
	rdb   *redis.Client
}

func setup(t *testing.T) fixture {
	t.Helper()
	ctx := context.Background()
	js := testenv.JetStream(t)
	if err := schemas.DefaultTopology().Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	opt, _ := redis.ParseURL(testenv.Redis(t))
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	kv, _ := js.KeyValue(ctx, schemas.BucketJobs)
	cmds, _ := js.Stream(ctx, schemas.StreamJobs)
	return fixture{statuscache.New(rdb, kv, cmds, testenv.Logger()), kv, js, rdb}
}

func spec(t *testing.T, name string) *schemas.JobSpec {
	s := &schemas.JobSpec{Name: name, Targets: []schemas.Host{{IP: "10.0.0.1"}, {IP: "10.0.0.2"}},
		Steps: []schemas.Step{{Script: &schemas.Script{Content: "true"}}}}
	if err := s.Normalize(); err != nil {
		t.Fatal(err)
	}
	return s
}

// store writes a job to KV the way workers do and returns the state revision.
func (f fixture) store(t *testing.T, id int64, sp *schemas.JobSpec, st *schemas.JobState) uint64 {
	t.Helper()
	ctx := context.Background()
	b, _ := json.Marshal(sp)
	f.kv.Put(ctx, schemas.KeyJobSpec(id), b)
	b, _ = json.Marshal(st)
	rev, err := f.kv.Put(ctx, schemas.KeyJobState(id), b)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func TestOlderWritesNeverWin(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	sp := spec(t, "j")
	now := time.Now().UTC()
	st := schemas.NewJobState(1, sp, now)
	if err := f.cache.Created(ctx, sp, st, 1, statuscache.BuildRows(sp, st, nil)); err != nil {
		t.Fatal(err)
	}
	running := *st
	running.Status = schemas.JobRunning
	row := schemas.HostRow{HostResult: schemas.HostResult{Index: 1, Host: sp.Steps[0].Targets[1], Status: schemas.HostRunning}}
	if err := f.cache.Update(ctx, sp, &running, 9, []schemas.HostRow{row}); err != nil {
		t.Fatal(err)
	}
	stale := row
	stale.Status = schemas.HostPending
	if err := f.cache.Update(ctx, sp, st, 4, []schemas.HostRow{stale}); err != nil {
		t.Fatal(err)
	}
	sum, err := f.cache.Job(ctx, 1)
	if err != nil || sum.Status != schemas.JobRunning {
		t.Errorf("summary: got %s %v, want running (the newer revision)", sum.Status, err)
	}
	rows, err := f.cache.Hosts(ctx, 1)
	if err != nil || len(rows) != 2 || rows[1].Status != schemas.HostRunning || rows[0].Status != schemas.HostPending {
		t.Errorf("rows: %+v %v", rows, err)
	}
	items, total, err := f.cache.List(ctx, statuscache.ListQuery{Status: schemas.JobWaiting, Page: 1, Size: 10})
	if err != nil || total != 0 || len(items) != 0 {
		t.Errorf("a stale write moved the job back to waiting: %d %v", total, err)
	}
}

func TestRebuiltAfterFlush(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	now := time.Now().UTC()
	for id, status := range map[int64]string{3: schemas.JobSuccess, 5: schemas.JobFailed, 8: schemas.JobSuccess} {
		sp := spec(t, "n"+string(rune('a'+id)))
		st := schemas.NewJobState(id, sp, now.Add(time.Duration(id)*time.Second))
		st.Status, st.UpdatedAt = status, now.Add(time.Duration(10-id)*time.Second)
		f.store(t, id, sp, st)
	}
	f.rdb.FlushAll(ctx)
	items, total, err := f.cache.List(ctx, statuscache.ListQuery{Status: schemas.JobSuccess, Desc: true, Page: 1, Size: 10})
	if err != nil || total != 2 || len(items) != 2 || items[0].ID != 8 || items[1].ID != 3 {
		t.Fatalf("list after flush: %+v %d %v", items, total, err)
	}
	items, _, _ = f.cache.List(ctx, statuscache.ListQuery{Sort: "updated_at", Page: 1, Size: 2})
	if len(items) != 2 || items[0].ID != 8 || items[1].ID != 5 {
		t.Errorf("sorted by update time: %+v", items)
	}
	items, total, _ = f.cache.List(ctx, statuscache.ListQuery{Name: "nf", Status: schemas.JobFailed, Page: 1, Size: 10})
	if total != 1 || items[0].ID != 5 {
		t.Errorf("name and status: %+v", items)
	}
	ids, err := f.cache.HostJobs(ctx, schemas.Host{IP: "10.0.0.2"}, 10)
	if err != nil || len(ids) != 3 || ids[0] != 8 {
		t.Errorf("host index after flush: %v %v", ids, err)
	}
	if _, err := f.cache.Job(ctx, 99); !errors.Is(err, schemas.ErrNotFound) {
		t.Errorf("unknown job: %v", err)
	}
}

func TestQueuedJobFoundInTheCommandStream(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	b, _ := json.Marshal(schemas.SubmitCommand{V: 1, Spec: *spec(t, "q"), SubmittedAt: time.Now()})
	ack, err := f.js.Publish(ctx, schemas.SubjSubmit, b)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := f.cache.Job(ctx, int64(ack.Sequence))
	if err != nil || sum.Status != schemas.JobWaiting || sum.Name != "q" || sum.TotalHosts != 2 {
		t.Errorf("queued job: %+v %v", sum, err)
	}
}

func TestScriptsReloadedAfterFlush(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	sp := spec(t, "s")
	st := schemas.NewJobState(4, sp, time.Now().UTC())
	for i := 0; i < 2; i++ { // the second write finds Redis without the scripts
		if err := f.cache.Update(ctx, sp, st, uint64(i+1), statuscache.BuildRows(sp, st, nil)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		f.rdb.ScriptFlush(ctx)
	}
	if sum, err := f.cache.Job(ctx, 4); err != nil || sum.Name != "s" {
		t.Errorf("after SCRIPT FLUSH: %+v %v", sum, err)
	}
	b := statuscache.NewBatcher(f.cache, 4)
	b.Queued(ctx, sp, schemas.NewJobState(5, sp, time.Now().UTC()))
	bctx, cancel := context.WithCancel(ctx)
	cancel()
	b.Run(bctx) // flushes what is pending, then returns
	if sum, err := f.cache.Job(ctx, 5); err != nil || sum.Status != schemas.JobWaiting {
		t.Errorf("batched queued job: %+v %v", sum, err)
	}
	if n, _ := f.rdb.Exists(ctx, "{fj}:job:5").Result(); n != 1 {
		t.Error("the batcher wrote nothing to Redis")
	}

	// a full queue holds the submission back until there is room: the
	// job is cached, not dropped
	b = statuscache.NewBatcher(f.cache, 1)
	b.Queued(ctx, sp, schemas.NewJobState(6, sp, time.Now().UTC()))
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		b.Queued(ctx, sp, schemas.NewJobState(7, sp, time.Now().UTC()))
	}()
	rctx, stop := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { defer close(ran); b.Run(rctx) }()
	<-waited
	stop()
	<-ran
	for _, key := range []string{"{fj}:job:6", "{fj}:job:7"} {
		if n, _ := f.rdb.Exists(ctx, key).Result(); n != 1 {
			t.Errorf("%s not cached by a batcher whose queue was full", key)
		}
	}
}

// Host rows rebuilt from a small job's state leave out the inline logs its
// results carry: a row (in Redis, in API answers) is never a log.
func TestRowsFromKVLeaveLogsOut(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	sp := spec(t, "inline")
	st := schemas.NewJobState(4, sp, time.Now().UTC())
	st.Status = schemas.JobSuccess
	out := "hi"
	for i := range st.Steps[0].Hosts.Status {
		st.Steps[0].Hosts.Status[i] = schemas.HostSuccess
		st.PutResults([]schemas.HostResult{{Index: i, Host: sp.Steps[0].Targets[i], Status: schemas.HostSuccess, Attempt: 1, Lines: 1, Log: &out}})
	}
	f.store(t, 4, sp, st)
	rows, err := f.cache.Hosts(ctx, 4) // a miss: built from the state
	if err != nil || len(rows) != 2 {
		t.Fatalf("rows: %+v %v", rows, err)
	}
	for _, r := range rows {
		if r.Log != nil || r.Lines != 1 || r.Status != schemas.HostSuccess {
			t.Errorf("row %d: %+v, want success, 1 line, no log", r.Index, r)
		}
	}
	cached, err := f.rdb.HGetAll(ctx, "{fj}:hosts:4").Result()
	if err != nil || len(cached) == 0 {
		t.Fatalf("cached rows: %v %v", cached, err)
	}
	for k, v := range cached {
		if strings.Contains(v, `"log"`) {
			t.Errorf("cached row %s: %s", k, v)
		}
	}
}

// A committed state whose cache write fails is not left behind: the job
// is remembered and its entry rewritten from JetStream.
func TestFailedWriteIsRepaired(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	sp := spec(t, "r")
	st := schemas.NewJobState(7, sp, time.Now().UTC())
	oldRev := f.store(t, 7, sp, st)
	done := *st
	done.Status = schemas.JobFailed
	done.Reason = "finished while Redis refused the write"
	rev := f.store(t, 7, sp, &done)
	// the entry's key holds a list: Redis refuses the write (WRONGTYPE)
	if err := f.rdb.RPush(ctx, "{fj}:job:7", "not a job").Err(); err != nil {
		t.Fatal(err)
	}
	if err := f.cache.Update(ctx, sp, &done, rev, nil); err == nil {
		t.Fatal("a write Redis refused reported success")
	}
	if f.cache.Stale() != 1 {
		t.Fatalf("stale entries: %d, want 1", f.cache.Stale())
	}
	// Redis answers again, still holding the job's older entry
	f.rdb.Del(ctx, "{fj}:job:7")
	if err := f.cache.Created(ctx, sp, st, oldRev, statuscache.BuildRows(sp, st, nil)); err != nil {
		t.Fatal(err)
	}
	if sum, _ := f.cache.Job(ctx, 7); sum.Status != schemas.JobWaiting {
		t.Fatalf("before the repair: %s, want the old entry (waiting)", sum.Status)
	}
	if n := f.cache.Repair(ctx); n != 1 || f.cache.Stale() != 0 {
		t.Fatalf("repaired %d, %d left", n, f.cache.Stale())
	}
	if sum, _ := f.cache.Job(ctx, 7); sum.Status != schemas.JobFailed || sum.Reason != done.Reason {
		t.Errorf("after the repair: %s %q, want failed with the reason", sum.Status, sum.Reason)
	}
}
