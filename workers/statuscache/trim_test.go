package statuscache_test

import (
	"context"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// Trim keeps the newest finished jobs up to the count, drops those not
// updated within the age, never touches a job not yet final, and leaves
// nothing of an evicted job in Redis but reads it from JetStream still.
func TestTrimBoundsFinishedJobs(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	now := time.Now().UTC()
	put := func(id int64, status string, updated time.Time) {
		sp := spec(t, "trim")
		st := schemas.NewJobState(id, sp, updated)
		st.Status, st.UpdatedAt = status, updated
		rev := f.store(t, id, sp, st)
		if err := f.cache.Created(ctx, sp, st, rev, statuscache.BuildRows(sp, st, nil)); err != nil {
			t.Fatal(err)
		}
	}
	// 1..6 finished, 2 of them a week old; 7 still running, and old
	for id := int64(1); id <= 6; id++ {
		put(id, schemas.JobSuccess, now.Add(-time.Duration(id)*time.Minute))
	}
	put(7, schemas.JobRunning, now.Add(-8*24*time.Hour))
	put(1, schemas.JobFailed, now.Add(-8*24*time.Hour))
	put(2, schemas.JobSuccess, now.Add(-8*24*time.Hour))
	if err := f.cache.EnsureBuilt(ctx); err != nil { // (no retention set: keeps all)
		t.Fatal(err)
	}

	n, err := f.cache.Trim(ctx, statuscache.Retention{MaxFinished: 3, MaxAge: 7 * 24 * time.Hour}, now)
	if err != nil || n != 3 {
		t.Fatalf("trim: %d evicted, %v; want 3 (1 and 2 too old and over the count, 3 over the count)", n, err)
	}
	items, total, err := f.cache.List(ctx, statuscache.ListQuery{Page: 1, Size: 10})
	if err != nil || total != 4 {
		t.Fatalf("listed after trim: %d %v", total, err)
	}
	var ids []int64
	for _, it := range items {
		ids = append(ids, it.ID)
	}
	if want := []int64{4, 5, 6, 7}; len(ids) != 4 || ids[0] != want[0] || ids[3] != want[3] {
		t.Errorf("kept %v, want %v", ids, want)
	}
	for _, id := range []int64{1, 2, 3} {
		key := "{fj}:job:" + string(rune('0'+id))
		if n, _ := f.rdb.Exists(ctx, key, "{fj}:hosts:"+string(rune('0'+id))).Result(); n != 0 {
			t.Errorf("job %d still has %d keys in Redis", id, n)
		}
		if ids, _ := f.cache.HostJobs(ctx, schemas.Host{IP: "10.0.0.1"}, 10); containsID(ids, id) {
			t.Errorf("job %d still in the host index: %v", id, ids)
		}
		if sum, err := f.cache.Job(ctx, id); err != nil || sum.ID != id {
			t.Errorf("evicted job %d not read from JetStream: %+v %v", id, sum, err)
		}
	}
	if n, err := f.cache.Trim(ctx, statuscache.Retention{MaxFinished: 3, MaxAge: 7 * 24 * time.Hour}, now); err != nil || n > 3 {
		t.Errorf("second trim: %d %v (only what reads put back may go again)", n, err)
	}
	// a rebuild after a flush applies the retention the cache was given
	f.cache.Retain(statuscache.Retention{MaxFinished: 2})
	f.rdb.FlushAll(ctx)
	if _, total, err := f.cache.List(ctx, statuscache.ListQuery{Page: 1, Size: 10}); err != nil || total != 3 {
		t.Errorf("after a flush, listed %d (%v), want the 2 newest finished and the running one", total, err)
	}
	if sum, err := f.cache.Job(ctx, 7); err != nil || sum.Status != schemas.JobRunning {
		t.Errorf("the running job: %+v %v", sum, err)
	}
}

func containsID(ids []int64, id int64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
