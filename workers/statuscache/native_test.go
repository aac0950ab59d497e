package statuscache_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// redisCall is a statuscache.Call over a client, one round trip per
// command: the twins' commands need no atomicity in a test that is the
// server's only client.
func redisCall(ctx context.Context, rdb *redis.Client) statuscache.Call {
	return func(args ...string) (any, error) {
		a := make([]any, len(args))
		for i, s := range args {
			a[i] = s
		}
		v, err := rdb.Do(ctx, a...).Result()
		if errors.Is(err, redis.Nil) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if n, ok := v.(int64); ok {
			return int(n), nil
		}
		return v, nil
	}
}

// TestNativeScriptsMatchLua runs the cache's Lua scripts on one Redis
// and their Go twins on another, on the same random inputs, and checks
// after each call that they answered alike and hold the same data: new
// jobs, newer and older revisions, moves between status sets, values of
// an older layout (hashes, "rev|json"), host rows given twice in one
// call, and jobs trimmed in between. (Host rows without a revision, of
// an older fleetjob, are not among them: real Redis's Lua overwrites
// them, as the twin does, while miniredis's fails the script, its
// string.match returning nothing where Lua returns nil.)
func TestNativeScriptsMatchLua(t *testing.T) {
	ctx := context.Background()
	open := func() (*miniredis.Miniredis, *redis.Client) {
		mr := miniredis.RunT(t)
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		t.Cleanup(func() { rdb.Close() })
		return mr, rdb
	}
	luaMR, lua := open()
	goMR, native := open()
	twins := map[string]func(statuscache.Call, []string, []string) (int, error){}
	var scripts []*redis.Script
	for _, n := range statuscache.NativeScripts() {
		sc := redis.NewScript(n.Lua)
		if sc.Hash() != n.SHA {
			t.Fatalf("the twin of %s is listed under %s", sc.Hash(), n.SHA)
		}
		if err := sc.Load(ctx, lua).Err(); err != nil {
			t.Fatal(err)
		}
		twins[n.SHA], scripts = n.Run, append(scripts, sc)
	}
	putJob, putHosts := scripts[0], scripts[1]
	call := redisCall(ctx, native)
	rng := rand.New(rand.NewPCG(1, 2))
	same := func(step string, sc *redis.Script, keys []string, argv []string) {
		t.Helper()
		a := make([]any, len(argv))
		for i, s := range argv {
			a[i] = s
		}
		want, werr := sc.EvalSha(ctx, lua, keys, a...).Int()
		got, gerr := twins[sc.Hash()](call, keys, argv)
		if (werr != nil) != (gerr != nil) || got != want {
			t.Fatalf("%s: Lua answered %d, %v; Go %d, %v", step, want, werr, got, gerr)
		}
		if l, g := luaMR.Dump(), goMR.Dump(); l != g {
			t.Fatalf("%s: the data differ\nLua:\n%s\nGo:\n%s", step, l, g)
		}
	}
	statusSets := []string{"st:queued", "st:running", "st:success", "st:failed"}
	for i := range 3000 {
		job := rng.IntN(20) + 1
		jobKey := "job:" + strconv.Itoa(job)
		switch r := rng.IntN(10); {
		case r < 5: // putJob, revisions around each other's
			keys := append([]string{jobKey, "all", "updated", "name:" + strconv.Itoa(rng.IntN(3))}, statusSets...)
			si := rng.IntN(len(statusSets) + 1)
			argv := []string{strconv.Itoa(rng.IntN(6)), fmt.Sprintf(`{"id":%d,"n":%d}`, job, i), strconv.Itoa(job),
				"s", strconv.Itoa(1000 + i), strconv.Itoa(si)}
			same(fmt.Sprintf("call %d putJob %v %v", i, keys, argv), putJob, keys, argv)
		case r < 8: // putHosts, some fields twice
			var argv []string
			for range rng.IntN(6) {
				argv = append(argv, "0.h"+strconv.Itoa(rng.IntN(4)), strconv.Itoa(rng.IntN(6)), "row"+strconv.Itoa(i))
			}
			keys := []string{"hosts:" + strconv.Itoa(job)}
			same(fmt.Sprintf("call %d putHosts %v", i, argv), putHosts, keys, argv)
		case r == 8: // a job an older fleetjob kept as a hash, or as "rev|json"
			asHash, rev, set := rng.IntN(2) == 0, strconv.Itoa(rng.IntN(6)), strconv.Itoa(rng.IntN(5))
			for _, rdb := range []*redis.Client{lua, native} {
				rdb.Del(ctx, jobKey)
				if asHash {
					rdb.HSet(ctx, jobKey, "rev", rev, "si", set)
				} else {
					rdb.Set(ctx, jobKey, rev+"|{}", 0)
				}
			}
		default: // trimmed, as the trimmer does
			for _, rdb := range []*redis.Client{lua, native} {
				rdb.Del(ctx, jobKey, "hosts:"+strconv.Itoa(job))
				for _, set := range append([]string{"all", "updated"}, statusSets...) {
					rdb.ZRem(ctx, set, strconv.Itoa(job))
				}
			}
		}
	}
}
