package statuscache_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// A queued job costs Redis a string and a listpack: no hashtable.
func TestQueuedJobIsCompact(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	sp := spec(t, "small")
	st := schemas.NewJobState(4, sp, time.Now().UTC())
	rows := statuscache.BuildRows(sp, st, nil)
	if err := f.cache.Created(ctx, sp, st, 1_234_567, rows); err != nil {
		t.Fatal(err)
	}
	if typ := f.rdb.Type(ctx, "{fj}:job:4").Val(); typ != "string" {
		t.Errorf("the summary is a %s, want a string", typ)
	}
	if enc := f.rdb.ObjectEncoding(ctx, "{fj}:hosts:4").Val(); enc != "listpack" {
		t.Errorf("the hosts hash is a %s, want a listpack", enc)
	}
	got, err := f.cache.Hosts(ctx, 4)
	if err != nil || !reflect.DeepEqual(got, rows) {
		t.Errorf("rows read back %+v %v, want %+v", got, err, rows)
	}
}

// A job an older fleetjob cached as a hash with JSON rows is read, listed,
// rewritten by its next write and evicted like any other.
func TestOlderLayoutStillServed(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	sp := spec(t, "old")
	st := schemas.NewJobState(6, sp, time.Now().UTC())
	rev := f.store(t, 6, sp, st)
	if _, _, err := f.cache.List(ctx, statuscache.ListQuery{Page: 1, Size: 1}); err != nil {
		t.Fatal(err) // built
	}
	sum := schemas.Summarize(sp, st)
	v, _ := json.Marshal(sum)
	si := 1 // waiting, the first status set
	rows := statuscache.BuildRows(sp, st, nil)
	rows[1].Lines = 3 // what only the cached row says
	r0, _ := json.Marshal(rows[0])
	r1, _ := json.Marshal(rows[1])
	f.rdb.HSet(ctx, "{fj}:job:6", "rev", rev, "v", v, "si", si)
	f.rdb.HSet(ctx, "{fj}:hosts:6", "0.0", "1|"+string(r0), "0.1", "1|"+string(r1), "_complete", "1")
	for _, k := range []string{"{fj}:jobs", "{fj}:jobs:st:waiting", "{fj}:jobs:name:old"} {
		f.rdb.ZAdd(ctx, k, redisZ(6, 6))
	}
	f.rdb.ZAdd(ctx, "{fj}:jobs:upd", redisZ(float64(sum.UpdatedAt.UnixMilli()), 6))

	items, total, err := f.cache.List(ctx, statuscache.ListQuery{Status: schemas.JobWaiting, Page: 1, Size: 10})
	if err != nil || total != 1 || len(items) != 1 || items[0].ID != 6 {
		t.Fatalf("listed %+v %d %v", items, total, err)
	}
	if typ := f.rdb.Type(ctx, "{fj}:job:6").Val(); typ != "string" {
		t.Errorf("after a read the summary is a %s, want it rewritten as a string", typ)
	}
	// the next write of an older hash moves it between sets as before
	f.rdb.Del(ctx, "{fj}:job:6")
	f.rdb.HSet(ctx, "{fj}:job:6", "rev", rev, "v", v, "si", si)
	done := *st
	done.Status, done.UpdatedAt = schemas.JobFailed, st.CreatedAt
	if err := f.cache.Update(ctx, sp, &done, rev+1, nil); err != nil {
		t.Fatal(err)
	}
	if n := f.rdb.ZCard(ctx, "{fj}:jobs:st:waiting").Val(); n != 0 {
		t.Errorf("still in the waiting set: %d", n)
	}
	if got, err := f.cache.Hosts(ctx, 6); err != nil || !reflect.DeepEqual(got, rows) {
		t.Errorf("JSON rows read back %+v %v", got, err)
	}
	// a finished job still kept as a hash leaves every index when evicted
	f.rdb.Del(ctx, "{fj}:job:6")
	v, _ = json.Marshal(schemas.Summarize(sp, &done))
	f.rdb.HSet(ctx, "{fj}:job:6", "rev", rev+1, "v", v, "si", 5)
	if n, err := f.cache.Trim(ctx, statuscache.Retention{MaxAge: time.Millisecond}, time.Now().Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("trimmed %d %v", n, err)
	}
	keys := f.rdb.Keys(ctx, "{fj}:*").Val()
	for _, k := range keys {
		if strings.Contains(k, ":6") || strings.HasSuffix(k, ":old") {
			t.Errorf("%s left after the eviction", k)
		}
	}
}

func redisZ(score float64, member int64) redis.Z { return redis.Z{Score: score, Member: member} }

// A summary that is not "<rev>|<si>|<json>" is a miss, rebuilt from
// JetStream, not a Redis failure.
func TestMalformedSummaryRebuilt(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	sp := spec(t, "bad")
	st := schemas.NewJobState(8, sp, time.Now().UTC())
	f.store(t, 8, sp, st)
	f.rdb.Set(ctx, "{fj}:job:8", "garbage", 0)
	if sum, err := f.cache.Job(ctx, 8); err != nil || sum.ID != 8 || sum.Name != "bad" {
		t.Fatalf("read %+v, %v", sum, err)
	}
	if v := f.rdb.Get(ctx, "{fj}:job:8").Val(); !strings.Contains(v, `|{"id":8,"name":"bad"`) {
		t.Errorf("not rewritten: %q", v)
	}
}
