package main

import (
	"reflect"
	"time"
	"unsafe"

	"github.com/alicebob/miniredis/v2"
)

// miniredis (v2.40.0 and its main branch) counts a version for every key
// name it ever wrote, for WATCH, and never forgets one: each job the
// status cache keeps and later trims leaves its key names behind, ~390
// bytes of serve's heap per job for good (15.6 MB after 40,000 jobs).
// fleetjob never uses WATCH, so the versions are dropped every
// forgetKeyVersionsEvery. The field is not exported; it is reached by
// reflection, and if a miniredis release renames it the loop does nothing
// (TestMiniredisForgetsKeyVersions then fails).

// forgetKeyVersionsEvery is how often the in-process Redis's key versions
// are dropped.
const forgetKeyVersionsEvery = time.Minute

// keyVersions is db's map of key versions, settable, and whether it was
// found; its server must be locked while it is used.
func keyVersions(db *miniredis.RedisDB) (reflect.Value, bool) {
	f := reflect.ValueOf(db).Elem().FieldByName("keyVersion")
	if !f.IsValid() || f.Kind() != reflect.Map || f.Type().Key().Kind() != reflect.String {
		return reflect.Value{}, false
	}
	return reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem(), true
}

// forgetKeyVersions empties db 0's key versions; it reports whether it
// could.
func forgetKeyVersions(mr *miniredis.Miniredis) bool {
	db := mr.DB(0) // outside the lock: DB takes it too
	mr.Lock()
	defer mr.Unlock()
	f, ok := keyVersions(db)
	if ok {
		f.Set(reflect.MakeMap(f.Type()))
	}
	return ok
}

// forgetKeyVersionsLoop drops the key versions periodically until stop
// is closed.
func forgetKeyVersionsLoop(mr *miniredis.Miniredis, stop <-chan struct{}) {
	t := time.NewTicker(forgetKeyVersionsEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			forgetKeyVersions(mr)
		}
	}
}
