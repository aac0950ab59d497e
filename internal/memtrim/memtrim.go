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
// (runtime/debug.FreeOSMemory). A busy process, collecting on its own, is
// left alone, and a quiet one is collected once per burst.
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
}

// held is the heap memory the process holds: spans in use (live objects
// and garbage not yet collected) and free spans not yet returned.
func held(ms *runtime.MemStats) uint64 { return ms.HeapInuse + ms.HeapIdle - ms.HeapReleased }

// Tick releases the heap when no collection ran since the last Tick and
// the heap held grew by MinIdle since the last release; it returns the
// heap held before and after, and whether it released.
func (t *Trimmer) Tick() (before, after uint64, released bool) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before = held(&ms)
	quiet := ms.NumGC == t.numGC
	t.numGC = ms.NumGC
	if !quiet || before < t.held+MinIdle {
		return before, before, false
	}
	debug.FreeOSMemory()
	runtime.ReadMemStats(&ms)
	t.numGC, t.held = ms.NumGC, held(&ms)
	return before, t.held, true
}
