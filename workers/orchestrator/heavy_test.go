package orchestrator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/schemas"
)

func specOf(hosts int) *schemas.JobSpec {
	s := &schemas.JobSpec{Steps: []schemas.Step{{}}}
	for i := range hosts {
		s.Steps[0].Targets = append(s.Steps[0].Targets, schemas.Host{IP: fmt.Sprintf("10.0.%d.%d", i/256, i%256)})
	}
	return s
}

// One big job's work at a time per process; small jobs never wait; work
// that has the turn (a creation carrying on as a commit) does not wait for
// itself.
func TestHeavyTurn(t *testing.T) {
	w := &Worker{heavy: NewHeavy()}
	big, small := specOf(HeavyHosts), specOf(HeavyHosts-1)
	ctx, done := w.heavyTurn(context.Background(), big)
	within := func(f func()) bool {
		ch := make(chan struct{})
		go func() { f(); close(ch) }()
		select {
		case <-ch:
			return true
		case <-time.After(200 * time.Millisecond):
			return false
		}
	}
	if !within(func() { _, d := w.heavyTurn(context.Background(), small); d() }) {
		t.Error("a small job waited for a big one's turn")
	}
	if !within(func() { _, d := w.heavyTurn(ctx, big); d() }) {
		t.Error("work that has the turn waited for itself")
	}
	second := make(chan struct{})
	go func() { _, d := w.heavyTurn(context.Background(), big); close(second); d() }()
	select {
	case <-second:
		t.Fatal("a second big job got the turn while the first had it")
	case <-time.After(100 * time.Millisecond):
	}
	done()
	select {
	case <-second:
	case <-time.After(5 * time.Second):
		t.Fatal("the second big job never got the turn")
	}
}
