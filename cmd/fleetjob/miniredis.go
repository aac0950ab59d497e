package main

import (
	"reflect"
	"strings"
	"time"
	"unsafe"

	"github.com/alicebob/miniredis/v2"
)

// The in-process Redis (miniredis v2.40.0 and its main branch) keeps
// memory that fleetjob's status cache no longer uses, in two ways; serve
// gives it back every tidyEvery (tidyLoop). miniredis's fields are not
// exported, so they are reached by reflection; if a release renames them
// the loop does nothing and TestMiniredisForgetsKeyVersions and
// TestMiniredisMapsShrinkAfterChurn fail.
//
//   - It counts a version of every key name it ever wrote, for WATCH, and
//     never forgets one: each job the cache keeps and later trims left its
//     key names behind, ~390 bytes per job for good (15.6 MB after 40,000
//     jobs). fleetjob never uses WATCH: the versions are dropped.
//   - Its data are Go maps (keys by type, a sorted set's members, a hash's
//     fields), and a Go map never shrinks: after a burst the cache trimmed
//     from 30,000 jobs to 10,000, its maps kept room for 30,000 (34.6 MB
//     where 10,000 jobs written afresh take 17.1 MB). Once as many keys
//     were written since the last compaction as it holds, and the last
//     minute was quiet, every map is copied into one of its size
//     (compactMaps). That holds the server's lock for ~50 ms per 20,000
//     keys, so it waits for a quiet minute: under steady load the maps
//     are the size of what they hold, give or take an earlier peak.

// tidyEvery is how often the in-process Redis's key versions are dropped
// and its maps looked at.
const tidyEvery = time.Minute

// minCompact is the least number of keys written since the last
// compaction that calls for one: a quiet cache is never copied.
const minCompact = 1000

// dbField is the field name of db, settable, and whether it is a map with
// string keys; its server must be locked while it is used.
func dbField(db *miniredis.RedisDB, name string) (reflect.Value, bool) {
	f := reflect.ValueOf(db).Elem().FieldByName(name)
	if !f.IsValid() || f.Kind() != reflect.Map || f.Type().Key().Kind() != reflect.String {
		return reflect.Value{}, false
	}
	return reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem(), true
}

// keyVersions is db's map of key versions (see dbField).
func keyVersions(db *miniredis.RedisDB) (reflect.Value, bool) { return dbField(db, "keyVersion") }

// forgetKeyVersions empties db 0's key versions. It returns how many key
// names they held (those written since the last call) and how many keys
// the server holds; ok reports whether it could.
func forgetKeyVersions(mr *miniredis.Miniredis) (written, held int, ok bool) {
	db := mr.DB(0) // outside the lock: DB takes it too
	mr.Lock()
	defer mr.Unlock()
	f, ok := keyVersions(db)
	keys, ok2 := dbField(db, "keys")
	if !ok || !ok2 {
		return 0, 0, false
	}
	written, held = f.Len(), keys.Len()
	f.Set(reflect.MakeMap(f.Type()))
	return written, held, true
}

// compactMaps copies each of db 0's maps of keys (and each map value in
// them: a hash's fields, a sorted set's members) into a new map of its
// size, and each string in them (keys, values, fields, members) into new
// memory, one copy of each distinct string: what a larger past left
// allocated is freed, and what is kept no longer pins the half-empty
// memory spans of the burst it was written in (Go's collector does not
// move objects; a span with one survivor stays in use). It returns false
// if miniredis's layout is not the one known.
func compactMaps(mr *miniredis.Miniredis) bool {
	db := mr.DB(0)
	mr.Lock()
	defer mr.Unlock()
	if _, ok := dbField(db, "keys"); !ok {
		return false
	}
	c := compactor{seen: map[string]string{}}
	for _, name := range []string{"keys", "stringKeys", "hashKeys", "sortedsetKeys", "setKeys", "ttl", "hashTTLs", "lru"} {
		if f, ok := dbField(db, name); ok {
			f.Set(c.copyMap(f, true))
		}
	}
	return true
}

// compactor copies maps and the strings in them, each distinct string once.
type compactor struct{ seen map[string]string }

// copyMap is a copy of m made at its size; with deep, map values are
// copied that way too.
func (c compactor) copyMap(m reflect.Value, deep bool) reflect.Value {
	out := reflect.MakeMapWithSize(m.Type(), m.Len())
	for it := m.MapRange(); it.Next(); {
		k, v := c.copyString(it.Key()), it.Value()
		if deep && v.Kind() == reflect.Map {
			v = c.copyMap(v, false)
		} else {
			v = c.copyString(v)
		}
		out.SetMapIndex(k, v)
	}
	return out
}

// copyString returns a string value in new memory (shared with the other
// copies of the same string); any other value as it is.
func (c compactor) copyString(v reflect.Value) reflect.Value {
	if v.Kind() != reflect.String {
		return v
	}
	s := v.String()
	cp, ok := c.seen[s]
	if !ok {
		cp = strings.Clone(s)
		c.seen[cp] = cp
	}
	return reflect.ValueOf(cp).Convert(v.Type())
}

// tidy drops the key versions, and compacts the maps once as many keys
// were written since the last compaction as the server holds (and at
// least minCompact) if those written since the last call are fewer than
// a quarter of them. written carries the count from call to call.
func tidy(mr *miniredis.Miniredis, written *int) {
	n, held, ok := forgetKeyVersions(mr)
	if !ok {
		return
	}
	*written += n
	if *written < minCompact || *written < held || n >= held/4 {
		return
	}
	if compactMaps(mr) {
		*written = 0
	}
}

// tidyLoop tidies every tidyEvery until stop is closed.
func tidyLoop(mr *miniredis.Miniredis, stop <-chan struct{}) {
	t := time.NewTicker(tidyEvery)
	defer t.Stop()
	written := 0
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			tidy(mr, &written)
		}
	}
}
