package memtrim

import "testing"

var sink [][]byte

// A burst that is over is released at the first look with no collection
// since the one before: the heap held falls to about what is live; a busy
// look (a collection ran since) and a look with nothing new release
// nothing.
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
	if _, _, again := tr.Tick(); again {
		t.Errorf("released again with nothing new")
	}
}
