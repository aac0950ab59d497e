package memtrim

import (
	"slices"
	"testing"
)

var sink [][]byte

// A burst that is over is released at the first look with no collection
// since the one before: the heap held falls to about what is live; a busy
// look (a collection ran since) releases nothing, and a quiet process is
// released again after 1, 2, 4, … looks.
func TestHeapOfABurstIsReleasedOnceQuiet(t *testing.T) {
	var tr Trimmer
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
