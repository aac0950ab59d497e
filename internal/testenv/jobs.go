package testenv

// This file holds what tests ask of a running system: submit a job and
// read it back, and wait until the workers consume.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/orchestrator"
	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// Submit queues a native job and returns its id, failing the test unless
// the API accepts it (202 with an id).
func (s *System) Submit(t testing.TB, body any, headers map[string]string) int64 {
	t.Helper()
	var out struct {
		ID int64 `json:"id"`
	}
	if code := s.JSON(t, "POST", "/v1/jobs", body, headers, &out); code != 202 || out.ID <= 0 {
		t.Fatalf("submit: got %d %+v, want 202 with an id", code, out)
	}
	return out.ID
}

// Job reads a job's summary through the native API.
func (s *System) Job(t testing.TB, id int64) schemas.JobSummary {
	t.Helper()
	var sum schemas.JobSummary
	if code := s.JSON(t, "GET", fmt.Sprintf("/v1/jobs/%d", id), nil, nil, &sum); code != 200 {
		t.Fatalf("get job %d: %d", id, code)
	}
	return sum
}

// Spec waits for job id's spec as the workers read it (its submit command,
// see statuscache.LoadSpec) and returns it.
func (s *System) Spec(t testing.TB, id int64) schemas.JobSpec {
	t.Helper()
	ctx := context.Background()
	kv, err := s.JS.KeyValue(ctx, schemas.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := s.JS.Stream(ctx, schemas.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	c := statuscache.New(s.RDB, kv, cmds, Logger())
	var spec *schemas.JobSpec
	Eventually(t, 10*time.Second, func() bool {
		spec, err = c.LoadSpec(ctx, id)
		return err == nil
	}, "spec of job %d", id)
	return *spec
}

// WaitResultPullers waits until n workers consume the reports: with a
// partitioned RESULTS stream, every partition's consumer has a puller and
// the partitions' leases name n workers (fewer when there are fewer
// partitions); without, the shared consumer has n pullers.
func (s *System) WaitResultPullers(t testing.TB, n int) {
	t.Helper()
	ctx := context.Background()
	st, err := s.JS.Stream(ctx, schemas.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	parts := schemas.ResultPartitionsOf(st.CachedInfo().Config)
	if parts == 0 {
		s.WaitPullers(t, schemas.StreamResults, schemas.ConsumerResults, n)
		return
	}
	leases, err := s.JS.KeyValue(ctx, schemas.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	// every worker has joined, and each partition is consumed by the
	// one the placement gives it to (a worker may get none: rendezvous
	// hashing of 8 partitions over 4 workers leaves one empty a third of
	// the time)
	Eventually(t, time.Minute, func() bool {
		lister, err := leases.ListKeysFiltered(ctx, "member.*")
		if err != nil {
			return false
		}
		var members []string
		for key := range lister.Keys() {
			members = append(members, strings.TrimPrefix(key, "member."))
		}
		if len(members) < n {
			return false
		}
		for k := range parts {
			c, err := s.JS.Consumer(ctx, schemas.StreamResults, schemas.PartitionConsumerName(k))
			if err != nil {
				return false
			}
			if info, err := c.Info(ctx); err != nil || info.NumWaiting < 1 {
				return false
			}
			e, err := leases.Get(ctx, schemas.PartitionLeaseKey(k))
			if err != nil || orchestrator.MemberName(string(e.Value())) != orchestrator.PartitionOwner(k, members) {
				return false
			}
		}
		return true
	}, "%d workers joined and the %d result partitions consumed where they belong", n, parts)
}

// WaitPullers waits until at least n pull requests wait on a consumer (so
// that n worker processes are ready to take its messages).
func (s *System) WaitPullers(t testing.TB, stream, consumer string, n int) {
	t.Helper()
	Eventually(t, time.Minute, func() bool {
		c, err := s.JS.Consumer(context.Background(), stream, consumer)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumWaiting >= n
	}, "%d pullers on %s", n, consumer)
}
