package failpoint

import (
	"syscall"
	"testing"
)

func TestParse(t *testing.T) {
	got := parse("a=2, b=1:stop,c=3:kill,d=0,e=x,f=1:explode,g,h=2:fail")
	want := map[string]point{"a": {2, syscall.SIGKILL, false}, "b": {1, syscall.SIGSTOP, false}, "c": {3, syscall.SIGKILL, false},
		"h": {2, syscall.SIGKILL, true}}
	if len(got) != len(want) {
		t.Fatalf("parsed %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %v, want %v", k, got[k], v)
		}
	}
}

// A point fires on its Nth pass only: earlier passes return, and Armed
// says when the next one fires.
func TestHitCountsDown(t *testing.T) {
	mu.Lock()
	armed = map[string]point{"p": {3, syscall.Signal(0), false}} // signal 0 is checked, not delivered
	mu.Unlock()
	Hit("p")
	if Armed("p") {
		t.Fatal("armed with 2 passes left")
	}
	Hit("p")
	if !Armed("p") {
		t.Fatal("not armed with 1 pass left")
	}
	Hit("p") // fires: signal 0, the process goes on
	if Armed("p") {
		t.Fatal("still armed after it fired")
	}
}

// A failing point fails from its Nth pass on, and Hit ignores it.
func TestFailFromTheNthPass(t *testing.T) {
	mu.Lock()
	armed = map[string]point{"f": {2, syscall.SIGKILL, true}}
	mu.Unlock()
	Hit("f") // not a Hit point: no signal
	if err := Fail("f"); err != nil {
		t.Fatalf("first pass: %v", err)
	}
	for range 3 {
		if err := Fail("f"); err == nil {
			t.Fatal("second and later passes must fail")
		}
	}
	if err := Fail("other"); err != nil {
		t.Fatalf("an unarmed point: %v", err)
	}
}
