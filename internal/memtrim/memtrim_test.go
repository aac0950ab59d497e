package memtrim

import (
	"runtime"
	"runtime/debug"
	"slices"
	"testing"
	"time"
)

var sink [][]byte

// A burst that is over is released at the first look with no collection
// since the one before: the heap held falls to about what is live; a busy
// look (a collection ran since) releases nothing, and a quiet process is
// released again after 1, 2, 4, … looks.
func TestHeapOfABurstIsReleasedOnceQuiet(t *testing.T) {
	var tr Trimmer
	t.Cleanup(tr.Stop)
	tr.Tick()
	for range 256 {
		sink = append(sink, make([]byte, 1<<20)) // 256 MiB, collections run meanwhile
	}
	sink = nil
	if _, _, released := tr.Tick(); released {
		t.Fatalf("released while collections ran since the last look")
	}
	before, after, released := tr.Tick()
	if !released {
		t.Fatalf("not released after the burst: %d bytes held", before)
	}
	if after >= before || after > 2*MinIdle {
		t.Errorf("held %d bytes before, %d after the release; want about what is live", before, after)
	}
	// still quiet: released again after 1, 2, 4, … more looks
	var got []bool
	for range 8 {
		_, _, r := tr.Tick()
		got = append(got, r)
	}
	if want := []bool{true, false, true, false, false, false, true, false}; !slices.Equal(got, want) {
		t.Errorf("releases of the quiet looks after it %v, want %v", got, want)
	}
	sink = append(sink, make([]byte, 64<<20)) // busy again: the count starts over
	sink = nil
	tr.Tick()
	if _, _, r := tr.Tick(); !r {
		t.Errorf("the next burst was not released")
	}
}

var live []byte

// An idle process with a large enough heap collects at IdlePercent; a
// burst of allocation restores GOGC from the collections it starts, and
// a small heap is never paced.
func TestIdleHeapGoal(t *testing.T) {
	base := gcPercent()
	if base <= IdlePercent { // (GOGC=off is -1)
		t.Skipf("GOGC=%d: nothing to pace", base)
	}
	var tr Trimmer
	t.Cleanup(tr.Stop)
	live = make([]byte, 2*MinPaced)
	runtime.GC()
	t0 := time.Now()
	tr.tick(t0)
	if tr.tick(t0.Add(10 * time.Second)); !tr.Idle() || gcPercent() != IdlePercent {
		t.Fatalf("a quiet look with %d bytes live: idle %v, GOGC %d; want idle at %d", liveHeap(), tr.Idle(), gcPercent(), IdlePercent)
	}
	// a burst: collections at the idle goal come back to back, and the
	// watcher restores GOGC from them, before any look
	deadline := time.Now().Add(time.Minute)
	for tr.Idle() && time.Now().Before(deadline) {
		for range 64 {
			sink = append(sink, make([]byte, 1<<20))
		}
		sink = nil
	}
	if tr.Idle() || gcPercent() != base {
		t.Fatalf("after a burst: idle %v, GOGC %d; want %d", tr.Idle(), gcPercent(), base)
	}
	// the next look, a second later, sees the burst's rate: it stays busy
	if tr.tick(t0.Add(11 * time.Second)); tr.Idle() {
		t.Errorf("idle again at the look after a burst")
	}
	// quiet again: idle, and the releases of the looks after it (forced
	// collections) do not count as work
	for i := range 4 {
		tr.tick(t0.Add(time.Duration(21+10*i) * time.Second))
	}
	if !tr.Idle() {
		t.Fatalf("not idle again after a quiet look")
	}
	tr.Stop()
	if tr.Idle() || gcPercent() != base {
		t.Errorf("Stop left GOGC at %d", gcPercent())
	}
	// GOGC=off is left off
	debug.SetGCPercent(-1)
	var off Trimmer
	off.tick(t0)
	off.tick(t0.Add(10 * time.Second))
	if p := debug.SetGCPercent(base); off.Idle() || p != -1 {
		t.Errorf("with GOGC=off: idle %v, GOGC %d", off.Idle(), p)
	}
	// a small heap is left at GOGC
	live = nil
	runtime.GC()
	var small Trimmer
	t.Cleanup(small.Stop)
	small.tick(t0)
	if small.tick(t0.Add(10 * time.Second)); small.Idle() {
		t.Errorf("idle with %d bytes live", liveHeap())
	}
}
