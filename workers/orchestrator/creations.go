package orchestrator

// This file holds held first commits. A small job's first commit (its
// state, created already dispatched, and its creation events) waits up to
// a window for the job's first reports, with its tasks already out: a job
// that finishes within the window is created and finished by one state
// write and one event message, so a one-host job stores five messages
// (submit, task, report, state, events), not seven. Nothing is weaker for
// it: the submit command is acked only once that commit is written, so a
// worker that dies holding one leaves the command to be redelivered and
// the job created again from it (its tasks again, under the same message
// ids: JetStream drops them as duplicates), and a report that finds no
// state yet (and no holder to forward it to, forward.go) is asked for
// again shortly (notCreated).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/failpoint"
	"github.com/fleetjob/fleetjob/internal/pubflow"
	"github.com/fleetjob/fleetjob/schemas"
)

// DefaultCreateWindow is how long a small job's first commit waits for its
// first reports: longer than a short script takes end to end under load
// (at 100 ms, 1 % of the benchmark's 5,000 one-host jobs from 64 clients
// missed it), short enough that a job shows running at once to a person
// (and a task running past 50 ms reports started, which writes the commit
// then).
const DefaultCreateWindow = 250 * time.Millisecond

// errNotCreated is a job whose submit command exists but whose first
// commit is not written yet: held, or its command not yet taken.
var errNotCreated = errors.New("its first commit is not written yet")

// Creations holds the first commits of the jobs a process's workers have
// created and not yet written, shared by its workers: a job's submit and
// its reports may be taken by different workers.
type Creations struct {
	window time.Duration
	mu     sync.Mutex
	m      map[int64]*creation
	// partitions counts the process's workers consuming each result
	// partition: a job whose reports go to another process is held
	// listening for the reports that process forwards (forward.go)
	partitions map[int]int
}

// NewCreations returns held commits that wait up to window; window <= 0
// holds none (every job's first commit is written as it is created).
func NewCreations(window time.Duration) *Creations {
	return &Creations{window: window, m: map[int64]*creation{}, partitions: map[int]int{}}
}

// consuming counts a worker of the process starting (+1) or stopping (-1)
// to consume result partition k.
func (c *Creations) consuming(k, delta int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.partitions[k] += delta; c.partitions[k] <= 0 {
		delete(c.partitions, k)
	}
}

// reportsHere says whether job id's reports come to this process: its
// result partition is consumed here, or the reports are not partitioned
// (one consumer that every worker shares).
func (w *Worker) reportsHere(id int64) bool {
	if w.partitions == 0 {
		return true
	}
	c := w.creations
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.partitions[schemas.ResultPartition(id, w.partitions)] > 0
}

// creation is one held first commit.
type creation struct {
	w      *Worker // the worker that took the submit command
	spec   *schemas.JobSpec
	t      *txn
	submit jetstream.Msg
	timer  *time.Timer
	// sub takes the reports forwarded by the process that consumes the
	// job's result partition, when that is not this one (nil otherwise)
	sub *nats.Subscription
}

// release stops what waits on a commit taken from the map.
func (cr *creation) release() {
	cr.timer.Stop()
	if cr.sub != nil {
		// drained, not unsubscribed: a forward the server routed here
		// before it heard of the unsubscribe is still answered (gone),
		// not dropped to leave its sender waiting
		_ = cr.sub.Drain()
	}
}

// take removes a job's held commit: whoever takes it writes it.
func (c *Creations) take(id int64) *creation {
	c.mu.Lock()
	defer c.mu.Unlock()
	cr, ok := c.m[id]
	if !ok {
		return nil
	}
	delete(c.m, id)
	cr.release()
	return cr
}

// takeOf removes every commit worker w holds.
func (c *Creations) takeOf(w *Worker) []*creation {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*creation
	for id, cr := range c.m {
		if cr.w == w {
			delete(c.m, id)
			cr.release()
			out = append(out, cr)
		}
	}
	return out
}

// holds says whether a new job's first commit may wait: a small job (its
// results ride in its state, so they join the commit) with tasks out and
// nothing decided yet, taken from its command the first time (a
// redelivered command may follow a worker that died holding it: its
// commit is written at once). Its reports may come to this process or to
// another, which forwards them (forward).
func (w *Worker) holds(spec *schemas.JobSpec, t *txn, redelivered bool) bool {
	return w.creations.window > 0 && !redelivered && spec.InlineResults() && len(t.tasks) > 0 && len(t.results) == 0
}

// holdCreation publishes a new job's tasks and holds its first commit until its
// first reports come (commitHeld) or the window ends. The submit command
// is settled with the commit. When another process consumes the job's
// reports, the commit also listens for the reports it forwards (forward.go).
func (w *Worker) holdCreation(ctx context.Context, spec *schemas.JobSpec, t *txn, submit jetstream.Msg) error {
	id := t.st.ID
	cr := &creation{w: w, spec: spec, t: t, submit: submit}
	if !w.reportsHere(id) {
		// subscribed before the tasks go out on the same connection, so
		// the server knows it before any report can be forwarded
		sub, err := w.nc.Subscribe(schemas.HeldSubject(id), w.onForwarded(id))
		if err != nil {
			return fmt.Errorf("hold job %d: %w", id, err)
		}
		cr.sub = sub
	}
	win := pubflow.New(w.js, pubflow.DefaultSize)
	err := w.publishTasks(ctx, win, id, t.tasks)
	if err == nil {
		err = win.Wait(ctx)
	}
	if err != nil {
		if cr.sub != nil {
			_ = cr.sub.Unsubscribe()
		}
		return err
	}
	w.m.TasksDispatched.Add(float64(len(t.tasks)))
	t.tasks = nil
	w.specs.put(id, spec) // its reports are checked against it
	w.creations.mu.Lock()
	cr.timer = time.AfterFunc(w.creations.window, func() {
		if cr := w.creations.take(id); cr != nil {
			unlock := w.locks.lock(id)
			w.commitHeld(cr, nil, "window_ended")
			unlock()
		}
	})
	w.creations.m[id] = cr
	w.creations.mu.Unlock()
	return nil
}

// commitHeld writes a held first commit with the reports given (none when
// its window ended), and settles its submit command; why says what wrote
// it (the label of fleetjob_first_commits_held_total).
func (w *Worker) commitHeld(cr *creation, reports []schemas.Report, why string) error {
	ctx, cancel := workCtx()
	defer cancel()
	w.m.FirstCommits.WithLabelValues(why).Inc()
	err := w.create(ctx, cr.spec, cr.t, reports)
	cr.w.settle(cr.submit, err)
	return err
}

// create writes a new job's first commit, with reports applied to it, and
// performs its effects. A job an earlier delivery created is carried on
// from its record.
func (w *Worker) create(ctx context.Context, spec *schemas.JobSpec, t *txn, reports []schemas.Report) error {
	st, id := t.st, t.st.ID
	if len(reports) > 0 {
		t.now = time.Now().UTC()
		for _, r := range reports {
			t.apply(r)
		}
		t.advance()
		st.UpdatedAt = t.now
		failpoint.Hit("report-computed")
	}
	if err := w.keepSuperseded(ctx, id, t.superseded); err != nil {
		return err
	}
	if err := w.storeResults(ctx, spec, st, t.results); err != nil {
		return err
	}
	b, _ := json.Marshal(st)
	rev, err := w.jobs.Create(ctx, schemas.KeyJobState(id), b)
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		// a compare-and-set lost (with revision 0): an earlier delivery
		// created it, and perhaps moved it on; carry on from there
		w.m.CASConflicts.Inc()
		return w.process(ctx, id, reports, nil, nil, true)
	case err != nil:
		return fmt.Errorf("create job %d: %w", id, err)
	}
	if len(reports) > 0 {
		failpoint.Hit("report-committed")
		if schemas.JobFinal(st.Status) {
			failpoint.Hit("report-committed-final")
		}
	}
	w.m.JobsCreated.Inc()
	w.specs.put(id, spec)
	return w.effects(ctx, spec, st, rev, t)
}

// flushHeld writes a job's held first commit, if this process holds one,
// before a command that needs the job's state (a stop, an operation).
func (w *Worker) flushHeld(id int64) {
	if cr := w.creations.take(id); cr != nil {
		w.commitHeld(cr, nil, "for_command")
	}
}

// flushAllHeld writes the commits this worker holds, as it stops.
func (w *Worker) flushAllHeld() {
	for _, cr := range w.creations.takeOf(w) {
		w.commitHeld(cr, nil, "at_shutdown")
	}
}

// notCreatedDelay is how long a report of a job with no first commit yet
// waits before it is delivered again: short at first (a held commit is
// written within its window), longer after (its worker may have died, and
// its command comes back after the ack wait).
func notCreatedDelay(m jetstream.Msg) time.Duration {
	n := uint64(1)
	if meta, err := m.Metadata(); err == nil {
		n = meta.NumDelivered
	}
	return min(50*time.Millisecond<<min(n-1, 10), 5*time.Second)
}

// lastNotCreated says whether a report has waited for its job's first
// commit long enough (60 deliveries: over 4 minutes with notCreatedDelay,
// several ack waits): it is then a dead letter, of a submit command that
// never made a job.
func lastNotCreated(m jetstream.Msg) bool {
	meta, err := m.Metadata()
	return err != nil || meta.NumDelivered >= 60
}
