package main

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// putJobArgs is a putJob call's keys and arguments for job id at rev.
func putJobArgs(id, rev string) ([]string, []any) {
	keys := []string{"job:" + id, "all", "updated", "name:x", "st:running", "st:success"}
	return keys, []any{rev, `{"id":` + id + `}`, id, "running", 1000, 1}
}

// inProcessRedis is serve's in-process Redis, stopped at the test's end.
func inProcessRedis(tb testing.TB) redis.UniversalClient {
	rdb, stop, err := openRedis("", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(stop)
	return rdb
}

// The in-process Redis answers the status cache's scripts with their Go
// twins (statuscache.TestNativeScriptsMatchLua checks they do what the
// scripts do): the scripts are never loaded into its Lua, so without
// the hook the calls would fail NOSCRIPT; calls on several connections at
// once leave the newest revision. It also asks for a password, and the
// hook answers no client that has not given it.
func TestInProcessRedisRunsScriptsInGo(t *testing.T) {
	ctx := context.Background()
	rdb := inProcessRedis(t)
	putJob := statuscache.NativeScripts()[0].SHA
	// concurrent calls on several connections: each runs whole under the lock
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for rev := range 50 {
				keys, argv := putJobArgs("7", strconv.Itoa(i*100+rev))
				if err := rdb.EvalSha(ctx, putJob, keys, argv...).Err(); err != nil {
					t.Errorf("EVALSHA of putJob: %v (is the hook installed? see miniscripts.go)", err)
					return
				}
			}
		})
	}
	wg.Wait()
	v, err := rdb.Get(ctx, "job:7").Result()
	if err != nil || !strings.HasPrefix(v, "749|1|") {
		t.Fatalf("job:7 holds %q (%v), want the newest revision, 749", v, err)
	}
	if n, _ := rdb.ZCard(ctx, "st:running").Result(); n != 1 {
		t.Fatalf("st:running holds %d members, want 1", n)
	}

	// no password: NOAUTH, from miniredis, for scripts too
	addr := rdb.(*redis.Client).Options().Addr
	stranger := redis.NewClient(&redis.Options{Addr: addr})
	defer stranger.Close()
	if err := stranger.Get(ctx, "job:7").Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("GET without the password: %v, want NOAUTH", err)
	}
	keys, argv := putJobArgs("8", "1")
	if err := stranger.EvalSha(ctx, putJob, keys, argv...).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("EVALSHA without the password: %v, want NOAUTH (the hook must not answer it)", err)
	}
	if n, _ := rdb.Exists(ctx, "job:8").Result(); n != 0 {
		t.Fatal("a client without the password wrote through the hook")
	}
}

// BenchmarkInProcessRedisPutJob measures one putJob call on the
// in-process Redis as serve runs it (the Go twin) beside miniredis
// running the script in its Lua, in the same run.
func BenchmarkInProcessRedisPutJob(b *testing.B) {
	ctx := context.Background()
	rdb := inProcessRedis(b)
	mr := miniredis.RunT(b)
	lua := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer lua.Close()
	script := redis.NewScript(statuscache.NativeScripts()[0].Lua)
	each := func(rdb redis.UniversalClient) float64 {
		const n = 2000
		start := time.Now()
		for i := range n {
			keys, argv := putJobArgs(strconv.Itoa(i), "1")
			if err := script.Run(ctx, rdb, keys, argv...).Err(); err != nil {
				b.Fatal(err)
			}
		}
		return float64(time.Since(start).Microseconds()) / n
	}
	for b.Loop() {
		twin, inLua := each(rdb), each(lua)
		b.ReportMetric(twin, "µs/call-go-twin")
		b.ReportMetric(inLua, "µs/call-miniredis-lua")
		b.ReportMetric(inLua/twin, "x-faster")
	}
}
