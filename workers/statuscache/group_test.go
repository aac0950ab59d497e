package statuscache_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// A one-host job's write does not wait behind a large group in flight:
// here the large lane's group is held while it is being built, and the
// small write still goes through (it would wait for the held group, and
// time out, if the lanes were one).
func TestSmallWriteDoesNotWaitBehindALargeGroup(t *testing.T) {
	opt, _ := redis.ParseURL(testenv.Redis(t))
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	c := statuscache.New(rdb, nil, nil, testenv.Logger())
	ctx := context.Background()
	hold, building, largeDone := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		largeDone <- c.RunGrouped(ctx, 200_000, func(p redis.Pipeliner) {
			close(building)
			<-hold
			p.Set(ctx, "large", "1", 0)
		})
	}()
	<-building
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.RunGrouped(sctx, 1, func(p redis.Pipeliner) { p.Set(ctx, "small", "1", 0) }); err != nil {
		t.Fatalf("the small write waited for the large group: %v", err)
	}
	close(hold)
	if err := <-largeDone; err != nil {
		t.Fatal(err)
	}
	if n, err := rdb.Exists(ctx, "small", "large").Result(); err != nil || n != 2 {
		t.Fatalf("%d of both writes stored (%v)", n, err)
	}
}
