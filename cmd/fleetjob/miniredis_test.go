package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// The in-process Redis forgets the key names of deleted keys: miniredis
// keeps a version of each for WATCH, which fleetjob does not use.
func TestMiniredisForgetsKeyVersions(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	for i := range 100 {
		k := fmt.Sprintf("{fj}:job:%d", i)
		rdb.HSet(ctx, k, "v", "x")
		rdb.Del(ctx, k)
	}
	rdb.Set(ctx, "kept", "1", 0)
	if n := keyVersionsLen(mr); n < 100 {
		t.Fatalf("%d key versions before, want the 101 names written (is the field still there?)", n)
	}
	if !forgetKeyVersions(mr) {
		t.Fatal("miniredis's key versions are out of reach: its layout changed, see miniredis.go")
	}
	if n := keyVersionsLen(mr); n != 0 {
		t.Fatalf("%d key versions after, want 0", n)
	}
	if v, err := rdb.Get(ctx, "kept").Result(); err != nil || v != "1" {
		t.Fatalf("a live key after: %q %v", v, err)
	}
	rdb.Set(ctx, "kept", "2", 0) // and writing goes on
	if v, _ := rdb.Get(ctx, "kept").Result(); v != "2" {
		t.Fatalf("a write after: %q", v)
	}
}

// keyVersionsLen is how many key versions db 0 holds (-1: unknown).
func keyVersionsLen(mr *miniredis.Miniredis) int {
	db := mr.DB(0)
	mr.Lock()
	defer mr.Unlock()
	f, ok := keyVersions(db)
	if !ok {
		return -1
	}
	return f.Len()
}
