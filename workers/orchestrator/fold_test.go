package orchestrator

import (
	"slices"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// A job's reports that arrive while its commit is in flight are folded by
// the next commit together, whole groups up to maxFold, and each group's
// done runs once its reports were committed.
func TestReportsQueuedBehindACommitAreFoldedTogether(t *testing.T) {
	release, inFlight := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var commits []int
	w := &Worker{sem: make(chan struct{}, 4)}
	w.queues.commit = func(id int64, msgs []jetstream.Msg) {
		mu.Lock()
		first := len(commits) == 0
		commits = append(commits, len(msgs))
		mu.Unlock()
		if first {
			close(inFlight)
			<-release // the first commit is in flight while more arrive
		}
	}
	var done sync.WaitGroup
	var order []int
	group := func(g, n int) {
		done.Add(1)
		w.enqueue(7, make([]jetstream.Msg, n), func() {
			mu.Lock()
			order = append(order, g)
			mu.Unlock()
			done.Done()
		})
	}
	group(0, 10)
	<-inFlight
	for g := 1; g <= 3; g++ {
		group(g, 100)
	}
	group(4, maxFold-250) // does not fit beside groups 1-3: the commit after
	close(release)
	done.Wait()
	w.wg.Wait()
	if want := []int{10, 300, maxFold - 250}; !slices.Equal(commits, want) {
		t.Fatalf("commits of %v reports, want %v", commits, want)
	}
	if want := []int{0, 1, 2, 3, 4}; !slices.Equal(order, want) {
		t.Fatalf("groups done in order %v, want %v", order, want)
	}
	if len(w.queues.m) != 0 {
		t.Fatalf("queues left: %v", w.queues.m)
	}
}
