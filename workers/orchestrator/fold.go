package orchestrator

// This file holds the per-job report queues: the reports of one job that
// arrive while that job's commit is in flight wait in its queue, and the
// next commit takes all of them, so a job with thousands of hosts
// answering at once is folded in a few large commits instead of many
// small ones queued on its lock (each commit writes the job's whole host
// table, so their number, not the reports', bounds a big job's pace).

import (
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// maxFold bounds the reports one commit takes from a job's queue.
const maxFold = 4096

// jobQueue is the reports of one job waiting for its folder, and what to
// call once each group of them is settled.
type jobQueue struct {
	msgs  []jetstream.Msg
	dones []foldDone
}

// foldDone is called once the first n messages queued with it are settled.
type foldDone struct {
	n    int
	done func()
}

// reportQueues maps job ids to the queues of jobs being folded.
type reportQueues struct {
	mu sync.Mutex
	m  map[int64]*jobQueue
	// commit folds one job's reports (the worker's onJobReports).
	commit func(id int64, msgs []jetstream.Msg)
}

// enqueue adds a group of one job's reports to its queue; done is called
// once they are all settled. When no folder runs for the job, the group
// starts one on the worker's pool.
func (w *Worker) enqueue(id int64, msgs []jetstream.Msg, done func()) {
	w.queues.mu.Lock()
	if q, ok := w.queues.m[id]; ok {
		q.msgs = append(q.msgs, msgs...)
		q.dones = append(q.dones, foldDone{len(msgs), done})
		w.queues.mu.Unlock()
		return
	}
	if w.queues.m == nil {
		w.queues.m = map[int64]*jobQueue{}
	}
	q := &jobQueue{msgs: msgs, dones: []foldDone{{len(msgs), done}}}
	w.queues.m[id] = q
	w.queues.mu.Unlock()
	w.spawn(func() { w.fold(id, q) })
}

// fold commits a job's queued reports, up to maxFold at a time, until its
// queue is empty.
func (w *Worker) fold(id int64, q *jobQueue) {
	for {
		w.queues.mu.Lock()
		if len(q.msgs) == 0 {
			delete(w.queues.m, id)
			w.queues.mu.Unlock()
			return
		}
		// take whole groups, at least one, up to maxFold reports
		n, g := 0, 0
		for g < len(q.dones) && (g == 0 || n+q.dones[g].n <= maxFold) {
			n += q.dones[g].n
			g++
		}
		msgs, dones := q.msgs[:n:n], q.dones[:g:g]
		q.msgs, q.dones = q.msgs[n:], q.dones[g:]
		w.queues.mu.Unlock()
		w.queues.commit(id, msgs)
		for _, d := range dones {
			d.done()
		}
	}
}
