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
//
// A process that has gone idle (it allocates little: heartbeats, the
// sweeper) also collects with a smaller heap goal, IdlePercent instead of
// GOGC: at rest it keeps about a quarter more than is live, not twice, for
// a collection every few seconds at most. Two collections less than
// BusyGap apart (work is back) restore GOGC at once, from the collection
// itself, not at the next look. A small heap (below MinPaced live, such
// as an agent's) is left at GOGC: its collections would come too often
// for the little it would save.
package memtrim

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// MinIdle is the growth of the held heap below which nothing is done: not
// worth a collection.
const MinIdle = 32 << 20

// The idle heap goal: IdlePercent is GOGC while idle, entered when
// collections at that goal would come IdleGap or more apart and left when
// two come less than BusyGap apart; MinPaced is the live heap below
// which the goal is never changed.
const (
	IdlePercent = 25
	IdleGap     = 2 * time.Second
	BusyGap     = time.Second
	MinPaced    = 16 << 20
)

// Run releases every interval until ctx ends; interval <= 0 does nothing.
func Run(ctx context.Context, interval time.Duration, log *slog.Logger) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var tr Trimmer
	defer tr.Stop()
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

	// the idle heap goal (pace); mu guards it against the collection
	// watcher, which runs on the finalizer goroutine
	mu        sync.Mutex
	base      int // GOGC as the process started (-1: off)
	idle      bool
	gen       uint64 // which watcher is current
	lastGC    time.Time
	auto      uint64 // collections the runtime started on its own, at lastGC
	lastTotal uint64
	lastLook  time.Time
}

// maxQuiet bounds the quiet looks between two releases of a quiet process.
const maxQuiet = 32

// held is the heap memory the process holds: spans in use (live objects
// and garbage not yet collected) and free spans not yet returned.
func held(ms *runtime.MemStats) uint64 { return ms.HeapInuse + ms.HeapIdle - ms.HeapReleased }

// Tick releases the heap when no collection ran since the last Tick and
// either the heap held grew by MinIdle since the last release or the
// quiet looks since it reached the next backoff step; it returns the heap
// held before and after, and whether it released. Each Tick also paces the
// heap goal (pace): an idle process counts as quiet.
func (t *Trimmer) Tick() (before, after uint64, released bool) {
	return t.tick(time.Now())
}

func (t *Trimmer) tick(now time.Time) (before, after uint64, released bool) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before = held(&ms)
	quiet := ms.NumGC == t.numGC
	if t.pace(&ms, now) {
		quiet = true // idle from now on: collections come at the idle goal
	}
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

// pace moves the heap goal to IdlePercent when the process allocates so
// little that collections at that goal would come IdleGap or more apart,
// and back to GOGC when they would come less than BusyGap apart; it
// reports whether the process is idle now.
func (t *Trimmer) pace(ms *runtime.MemStats, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lastLook.IsZero() {
		t.base = gcPercent()
		t.lastTotal, t.lastLook = ms.TotalAlloc, now
		return false
	}
	elapsed := now.Sub(t.lastLook)
	allocated := ms.TotalAlloc - t.lastTotal
	t.lastTotal, t.lastLook = ms.TotalAlloc, now
	if t.base <= IdlePercent || elapsed <= 0 { // (GOGC=off is -1)
		return t.idle // GOGC is off or already small: nothing to pace
	}
	live := liveHeap()
	room := float64(live) * IdlePercent / 100 // allocated between two idle collections
	perSecond := float64(allocated) / elapsed.Seconds()
	switch {
	case !t.idle && live >= MinPaced && perSecond*IdleGap.Seconds() <= room:
		t.idle, t.lastGC, t.auto = true, time.Time{}, autoCycles() // the collection the lower goal may start at once does not count
		t.gen++
		debug.SetGCPercent(IdlePercent)
		t.watch(t.gen)
	case t.idle && (live < MinPaced/2 || perSecond*BusyGap.Seconds() > room):
		t.busy()
	}
	return t.idle
}

// busy restores GOGC; t.mu is held.
func (t *Trimmer) busy() {
	t.idle = false
	t.gen++ // the watcher stops at its next collection
	debug.SetGCPercent(t.base)
}

// Stop restores GOGC if the process is idle.
func (t *Trimmer) Stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.idle {
		t.busy()
	}
}

// Idle reports whether the idle heap goal is in force.
func (t *Trimmer) Idle() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.idle
}

// gcSentinel is garbage at once; its finalizer runs after the next
// collection. (It holds a pointer: a tiny pointer-free object may share
// its block with others and never be finalized.)
type gcSentinel struct{ _ *int }

// watch calls onGC after the next collection while gen is current.
func (t *Trimmer) watch(gen uint64) {
	runtime.SetFinalizer(&gcSentinel{}, func(*gcSentinel) { t.onGC(gen) })
}

// onGC is the watcher: a collection less than BusyGap after the one
// before means work is back, and GOGC is restored now.
func (t *Trimmer) onGC(gen uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.idle || gen != t.gen {
		return
	}
	now, auto := time.Now(), autoCycles()
	if auto == t.auto { // forced (a release): not a sign of work
		t.watch(gen)
		return
	}
	if !t.lastGC.IsZero() && now.Sub(t.lastGC) < BusyGap {
		t.busy()
		return
	}
	t.lastGC, t.auto = now, auto
	t.watch(gen)
}

// gcPercent is GOGC as it is now, -1 when off (read, not set and set
// back, which would turn collection on for a moment).
func gcPercent() int { return int(int64(readMetric("/gc/gogc:percent"))) }

// liveHeap is the heap the last collection found live.
func liveHeap() uint64 { return readMetric("/gc/heap/live:bytes") }

// autoCycles counts the collections the runtime started on its own (not
// runtime.GC nor debug.FreeOSMemory).
func autoCycles() uint64 { return readMetric("/gc/cycles/automatic:gc-cycles") }

func readMetric(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
