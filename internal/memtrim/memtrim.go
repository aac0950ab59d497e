// Package memtrim gives a long-running process's heap memory back to the
// operating system once a burst is over.
//
// Go's runtime keeps the heap a burst grew (thousands of jobs submitted at
// once) until a collection finds it garbage and its background scavenger
// returns it, slowly; a process that has gone quiet may not collect for
// two minutes, and its resident memory stays at the burst's peak. Run
// looks every interval: when no collection ran since its last look (the
// process is quiet) and the heap it holds grew by MinIdle or more since
// the last release, it collects and returns the free memory at once
// (runtime/debug.FreeOSMemory), and again after 1, 2, 4, … up to 32 more
// quiet looks (what was live then, caches that expire when idle, may be
// garbage since). A busy process, collecting on its own, is left alone.
package memtrim

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"time"
)

// MinIdle is the growth of the held heap below which nothing is done: not
// worth a collection.
const MinIdle = 32 << 20

// Run releases every interval until ctx ends; interval <= 0 does nothing.
func Run(ctx context.Context, interval time.Duration, log *slog.Logger) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var tr Trimmer
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if before, after, ok := tr.Tick(); ok {
			log.Debug("heap returned to the OS after a burst", "held_before", before, "held_after", after)
		}
	}
}

// Trimmer remembers what Tick saw last.
type Trimmer struct {
	numGC uint32
	held  uint64 // after the last release
	// quiet counts the quiet looks since the last release; another
	// release comes after next of them (1, 2, 4, … up to maxQuiet): what
	// was live at a release (caches that expire once idle) may be garbage
	// soon after, and only a collection finds it
	quiet, next int
}

// maxQuiet bounds the quiet looks between two releases of a quiet process.
const maxQuiet = 32

// held is the heap memory the process holds: spans in use (live objects
// and garbage not yet collected) and free spans not yet returned.
func held(ms *runtime.MemStats) uint64 { return ms.HeapInuse + ms.HeapIdle - ms.HeapReleased }

// Tick releases the heap when no collection ran since the last Tick and
// either the heap held grew by MinIdle since the last release or the
// quiet looks since it reached the next backoff step; it returns the heap
// held before and after, and whether it released.
func (t *Trimmer) Tick() (before, after uint64, released bool) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before = held(&ms)
	quiet := ms.NumGC == t.numGC
	t.numGC = ms.NumGC
	switch {
	case !quiet:
		t.quiet, t.next = 0, 0 // busy: the runtime collects on its own
		return before, before, false
	case before >= t.held+MinIdle:
		t.next = 1 // a burst is over
	case t.next > 0 && t.quiet+1 >= t.next:
		t.next = min(2*t.next, maxQuiet) // still quiet: what expired since
	default:
		t.quiet++
		return before, before, false
	}
	debug.FreeOSMemory()
	runtime.ReadMemStats(&ms)
	t.numGC, t.held, t.quiet = ms.NumGC, held(&ms), 0
	return before, t.held, true
}
