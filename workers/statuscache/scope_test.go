package statuscache_test

import (
	"context"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// A listing kept to scopes answers from their index: only those scopes'
// jobs, with the status and name filters, ordered and paged; an evicted
// job leaves its scope's index too.
func TestListByScope(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	now := time.Now().UTC()
	put := func(id int64, scope, name, status string) {
		sp := spec(t, name)
		if scope != "" {
			sc, err := schemas.ParseScope(scope)
			if err != nil {
				t.Fatal(err)
			}
			sp.Scope = &sc
		}
		st := schemas.NewJobState(id, sp, now)
		st.Status, st.UpdatedAt = status, now.Add(-time.Duration(id)*time.Minute)
		rev := f.store(t, id, sp, st)
		if err := f.cache.Created(ctx, sp, st, rev, statuscache.BuildRows(sp, st, nil)); err != nil {
			t.Fatal(err)
		}
	}
	put(1, "biz:2", "a", schemas.JobSuccess)
	put(2, "biz:3", "a", schemas.JobSuccess)
	put(3, "biz:2", "b", schemas.JobRunning)
	put(4, "", "a", schemas.JobSuccess)
	put(5, "biz:2", "a", schemas.JobFailed)
	if err := f.cache.EnsureBuilt(ctx); err != nil {
		t.Fatal(err)
	}
	ids := func(q statuscache.ListQuery) ([]int64, int) {
		t.Helper()
		items, total, err := f.cache.List(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, it := range items {
			out = append(out, it.ID)
		}
		return out, total
	}
	if got, total := ids(statuscache.ListQuery{Scopes: []string{"biz:2"}, Page: 1, Size: 10}); total != 3 || len(got) != 3 || got[0] != 1 || got[2] != 5 {
		t.Errorf("biz:2: %v of %d, want 1 3 5", got, total)
	}
	if got, total := ids(statuscache.ListQuery{Scopes: []string{"biz:2", "biz:3"}, Name: "a", Desc: true, Page: 1, Size: 2}); total != 3 || len(got) != 2 || got[0] != 5 || got[1] != 2 {
		t.Errorf("biz:2+3 named a, newest first, page of 2: %v of %d, want 5 2 of 3", got, total)
	}
	if got, total := ids(statuscache.ListQuery{Scopes: []string{"biz:2"}, Status: schemas.JobSuccess, Page: 1, Size: 10}); total != 1 || got[0] != 1 {
		t.Errorf("biz:2 successful: %v of %d, want 1", got, total)
	}
	if got, _ := ids(statuscache.ListQuery{Scopes: []string{"biz:2"}, Sort: "updated_at", Page: 1, Size: 10}); len(got) != 3 || got[0] != 5 || got[2] != 1 {
		t.Errorf("biz:2 by update time: %v, want 5 3 1", got)
	}
	if _, err := f.cache.Trim(ctx, statuscache.Retention{MaxFinished: 2}, now); err != nil {
		t.Fatal(err)
	}
	if got, total := ids(statuscache.ListQuery{Scopes: []string{"biz:2"}, Page: 1, Size: 10}); total != 2 || got[0] != 3 || got[1] != 5 {
		t.Errorf("biz:2 after job 1 was evicted: %v of %d, want 3 5", got, total)
	}
}
