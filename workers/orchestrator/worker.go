// Package orchestrator holds the workers' job state machines: they take
// commands and reports from JetStream, expand jobs into per-host tasks,
// dispatch them to agents, record results exactly once, enforce deadlines
// and stops, and finish jobs. Workers are stateless; any of them may die at
// any instant and another carries on from the KV state.
package orchestrator

// This file holds the worker itself: its parts and lifecycle, the
// consumers of commands and reports, how each message is settled, and
// the creation of a submitted job.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/internal/failpoint"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/pull"
	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// Config tunes a worker.
type Config struct {
	// Name identifies the worker in logs, leases and event sources.
	Name string
	// Parallel bounds how many jobs one worker processes at once.
	Parallel int
	// SweepEvery is the sweeper's period.
	SweepEvery time.Duration
	Topology   schemas.Topology
	// Segments is the result segments the workers of one process wrote
	// last (NewSegments), shared so that a job's batches taken by either
	// worker need no read before their write; nil: this worker's own.
	Segments *Segments
	// Specs is the spec cache of the process's workers (NewSpecs); nil:
	// this worker's own, of DefaultSpecs.
	Specs *Specs
	// Creations holds the process's workers' held first commits
	// (NewCreations); nil: this worker's own, of DefaultCreateWindow.
	Creations *Creations
	// Heavy paces the process's workers' big jobs (NewHeavy); nil: this
	// worker's own.
	Heavy *Heavy
}

// Worker drives jobs.
type Worker struct {
	cfg  Config
	nc   *nats.Conn
	js   jetstream.JetStream
	jobs jetstream.KeyValue
	// sweepKV holds the sweeper's bookmark (see sweepView).
	sweepKV jetstream.KeyValue
	leases  jetstream.KeyValue
	dead    jetstream.KeyValue
	dir     Directory
	cache   *statuscache.Cache
	pub     *events.Publisher
	m       *Metrics
	log     *slog.Logger

	locks keyedMutex
	// queues holds the reports of jobs being folded (fold.go).
	queues reportQueues
	sem    chan struct{}
	wg     sync.WaitGroup

	specs *Specs
	// creations holds first commits waiting for their job's first
	// reports (creations.go).
	creations *Creations
	heavy     *Heavy

	segs *Segments
	// writeSpecs: the JOBS stream was created as a work queue, which
	// removes a command once taken, so each job's spec is written to the
	// jobs bucket as it was before the commands were kept.
	writeSpecs bool
	// partitions is the RESULTS stream's partition count (see
	// partitions.go); 0: one consumer shared by every worker.
	partitions int
}

// New builds a worker. The topology must already exist.
func New(ctx context.Context, cfg Config, nc *nats.Conn, js jetstream.JetStream, dir Directory, cache *statuscache.Cache, m *Metrics, log *slog.Logger) (*Worker, error) {
	if cfg.Parallel <= 0 {
		cfg.Parallel = 64
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = time.Second
	}
	if cfg.Segments == nil {
		cfg.Segments = NewSegments()
	}
	if cfg.Specs == nil {
		cfg.Specs = NewSpecs(DefaultSpecs)
	}
	if cfg.Heavy == nil {
		cfg.Heavy = NewHeavy()
	}
	if cfg.Creations == nil {
		cfg.Creations = NewCreations(DefaultCreateWindow)
	}
	w := &Worker{
		cfg: cfg, nc: nc, js: js, dir: dir, cache: cache, m: m,
		log:   log.With("component", "worker", "worker", cfg.Name),
		pub:   events.NewPublisher(js, "fleetjob/worker/"+cfg.Name),
		sem:   make(chan struct{}, cfg.Parallel),
		specs: cfg.Specs, segs: cfg.Segments, creations: cfg.Creations, heavy: cfg.Heavy,
	}
	w.queues.commit = w.onJobReports
	var err error
	for name, dst := range map[string]*jetstream.KeyValue{
		schemas.BucketJobs: &w.jobs, schemas.BucketSweep: &w.sweepKV, schemas.BucketLeases: &w.leases,
		schemas.BucketDeadLetters: &w.dead,
	} {
		if *dst, err = js.KeyValue(ctx, name); err != nil {
			return nil, fmt.Errorf("bucket %s: %w", name, err)
		}
	}
	cmds, err := js.Stream(ctx, schemas.StreamJobs)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", schemas.StreamJobs, err)
	}
	results, err := js.Stream(ctx, schemas.StreamResults)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", schemas.StreamResults, err)
	}
	w.partitions = schemas.ResultPartitionsOf(results.CachedInfo().Config)
	if cmds.CachedInfo().Config.Retention == jetstream.WorkQueuePolicy {
		w.writeSpecs = true
		w.log.Warn("the JOBS stream is a work queue (created by an older fleetjob): every job's spec is written to the jobs bucket as well; recreate JOBS with limits retention to save that write")
	}
	return w, nil
}

// Run consumes commands and reports and runs the sweeper when it holds the
// lease, until ctx ends; then it stops fetching, hands back what it had not
// started, and waits for work in flight.
func (w *Worker) Run(ctx context.Context) error {
	cmds, err := w.js.CreateOrUpdateConsumer(ctx, schemas.StreamJobs, w.cfg.Topology.CommandConsumer())
	if err != nil {
		return fmt.Errorf("command consumer: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return pull.Batches(gctx, cmds, 256, w.onCommands) })
	if w.partitions > 0 {
		g.Go(func() error { return w.consumePartitions(gctx, w.partitions) })
	} else {
		res, err := w.js.CreateOrUpdateConsumer(ctx, schemas.StreamResults, w.cfg.Topology.ResultConsumer())
		if err != nil {
			return fmt.Errorf("result consumer: %w", err)
		}
		g.Go(func() error { return pull.Batches(gctx, res, 1024, w.onReports) })
	}
	g.Go(func() error { return w.sweep(gctx) })
	err = g.Wait()
	w.wg.Wait()
	w.flushAllHeld()
	return err
}

// spawn runs f on the worker's bounded pool.
func (w *Worker) spawn(f func()) {
	w.sem <- struct{}{}
	w.wg.Add(1)
	go func() {
		defer func() { <-w.sem; w.wg.Done() }()
		f()
	}()
}

func (w *Worker) onCommands(batch []jetstream.Msg) {
	if len(batch) == 0 {
		return
	}
	h := w.hold(len(batch))
	for i, m := range batch {
		h.add(i, m)
		w.spawn(func() {
			defer h.done(i)
			w.onCommand(m)
		})
	}
}

// held keeps a fetched batch's messages from being redelivered while they
// wait for a slot or a job's lock and while they are processed: every
// AckWait/3 it tells the server each one not done yet is in progress.
// Without it a batch that waits out the AckWait behind a busy pool is
// delivered again and handled twice at once, and the second handler,
// taking it for a replay after a crash, publishes again events the first
// has in flight (a batch of them has no single id to deduplicate by).
type held struct {
	mu    sync.Mutex
	msgs  map[int][]jetstream.Msg
	stop  chan struct{}
	count int
}

// hold starts keeping n units of work (messages, or groups of them) alive.
func (w *Worker) hold(n int) *held {
	h := &held{msgs: make(map[int][]jetstream.Msg, n), stop: make(chan struct{}), count: n}
	every := max(w.cfg.Topology.AckWait/3, 100*time.Millisecond)
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
			h.mu.Lock()
			for _, ms := range h.msgs {
				for _, m := range ms {
					_ = m.InProgress()
				}
			}
			h.mu.Unlock()
		}
	}()
	return h
}

func (h *held) add(unit int, ms ...jetstream.Msg) {
	h.mu.Lock()
	h.msgs[unit] = append(h.msgs[unit], ms...)
	h.mu.Unlock()
}

// done ends the keeping of one unit; the last one stops the ticker.
func (h *held) done(unit int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.msgs, unit)
	if h.count--; h.count == 0 {
		close(h.stop)
	}
}

// workCtx is the context of one unit of work: it is not cancelled by
// shutdown, so work in flight completes, but it is bounded.
func workCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

func (w *Worker) onCommand(m jetstream.Msg) {
	ctx, cancel := workCtx()
	defer cancel()
	meta, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return
	}
	redelivered := meta.NumDelivered > 1
	switch m.Subject() {
	case schemas.SubjSubmit:
		id := int64(meta.Sequence.Stream)
		unlock := w.locks.lock(id)
		held, serr := w.submit(ctx, id, m, redelivered)
		unlock()
		if held {
			return // settled with the job's first commit (creations.go)
		}
		err = serr
	case schemas.SubjStop:
		var cmd schemas.StopCommand
		if err = json.Unmarshal(m.Data(), &cmd); err != nil {
			err = fmt.Errorf("undecodable stop command: %w: %w", schemas.ErrInvalid, err)
			break
		}
		unlock := w.locks.lock(cmd.JobID)
		w.flushHeld(cmd.JobID)
		err = w.process(ctx, cmd.JobID, nil, &cmd, nil, redelivered)
		unlock()
		if errors.Is(err, schemas.ErrNotFound) {
			// The API only stops jobs it can see, so the submit command is
			// probably still on its way to a worker: retry (bounded).
			err = fmt.Errorf("stop of job %d before the job exists: %v", cmd.JobID, err)
		}
	case schemas.SubjOp:
		var cmd schemas.OpCommand
		if err = json.Unmarshal(m.Data(), &cmd); err != nil {
			err = fmt.Errorf("undecodable operation command: %w: %w", schemas.ErrInvalid, err)
			break
		}
		unlock := w.locks.lock(cmd.JobID)
		w.flushHeld(cmd.JobID)
		err = w.process(ctx, cmd.JobID, nil, nil, &cmd, redelivered)
		unlock()
	default:
		err = fmt.Errorf("unknown command subject %q: %w", m.Subject(), schemas.ErrInvalid)
	}
	w.settle(m, err)
}

// settle acks a message whose effect is committed, terminates one that can
// never succeed, and naks the rest for a retry.
// A message that fails for good (a permanent error, or its last allowed
// delivery) is recorded as a dead letter before it is terminated.
func (w *Worker) settle(m jetstream.Msg, err error) {
	if err == nil {
		_ = m.Ack()
		return
	}
	if errors.Is(err, errNotCreated) {
		if !lastNotCreated(m) {
			// its job's first commit is held, or its submit not yet
			// taken: soon again, with backoff (creations.go)
			w.m.EarlyReports.Inc()
			_ = m.NakWithDelay(notCreatedDelay(m))
			return
		}
		// waited minutes: a submit command that never made a job
		err = fmt.Errorf("%w: %w", schemas.ErrNotFound, err)
	}
	permanent := errors.Is(err, schemas.ErrNotFound) || errors.Is(err, schemas.ErrInvalid) || errors.Is(err, schemas.ErrConflict)
	last := false
	if meta, merr := m.Metadata(); merr == nil && w.maxDeliver(m) > 0 && meta.NumDelivered >= uint64(w.maxDeliver(m)) {
		last = true
	}
	if !permanent && !last {
		w.log.Warn("message will be retried", "subject", m.Subject(), "err", err)
		_ = m.NakWithDelay(500 * time.Millisecond)
		return
	}
	ctx, cancel := workCtx()
	defer cancel()
	if derr := w.deadLetter(ctx, m, err); derr != nil {
		w.log.Error("dead letter not recorded; the message will come back", "subject", m.Subject(), "err", derr)
		_ = m.NakWithDelay(5 * time.Second)
		return
	}
	_ = m.Term()
}

// maxDeliver is how many deliveries a message gets before it is a dead
// letter; 0 means unlimited. Commands and the sweeper's kicks have the
// topology's limit (a kick that cannot be applied that often means the
// job cannot make progress: it is failed, not kicked forever); agents'
// reports have none, as a result must reach its job.
func (w *Worker) maxDeliver(m jetstream.Msg) int {
	if schemas.IsCommandSubject(m.Subject()) {
		return w.cfg.Topology.MaxDeliver
	}
	if from, err := schemas.ParseResultSubject(m.Subject()); err == nil && from.Sweeper {
		return w.cfg.Topology.MaxDeliver
	}
	return 0
}

// submit creates a job from its command (unless a previous delivery did)
// and dispatches its first hosts. A small job's first commit may be held
// for its first reports (held: the command is settled with that commit).
func (w *Worker) submit(ctx context.Context, id int64, m jetstream.Msg, redelivered bool) (held bool, err error) {
	var cmd schemas.SubmitCommand
	if err := json.Unmarshal(m.Data(), &cmd); err != nil {
		return false, fmt.Errorf("decode submit %d: %w: %w", id, schemas.ErrInvalid, err)
	}
	spec := &cmd.Spec
	if err := spec.Normalize(); err != nil {
		return false, fmt.Errorf("submit %d: %w", id, err)
	}
	ctx, done := w.heavyTurn(ctx, spec)
	defer done()
	// The command stays in JOBS as the job's spec (see LoadSpec).
	if w.writeSpecs {
		specJSON, _ := json.Marshal(spec)
		if _, err := w.jobs.Create(ctx, schemas.KeyJobSpec(id), specJSON); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return false, fmt.Errorf("store spec %d: %w", id, err)
		}
	}
	// The job is created already advanced (its first hosts dispatched):
	// one state write, not a create and then a compare-and-set.
	now := time.Now().UTC()
	st := schemas.NewJobState(id, spec, now)
	t := newTxn(spec, st, now, w.dir)
	t.created = true
	t.emit(events.JobCreated, t.jobID(), t.jobID(), schemas.Summarize(spec, st))
	t.advance()
	if w.holds(spec, t, redelivered) {
		if err := w.holdCreation(ctx, spec, t, m); err != nil {
			return false, err
		}
		return true, nil
	}
	return false, w.create(ctx, spec, t, nil)
}

func (w *Worker) onReports(batch []jetstream.Msg) { w.reportBatch(batch, nil) }

// reportBatch hands a batch of reports, grouped by job, to the jobs'
// queues (fold.go); started (when not nil) counts the groups until each
// has ended.
func (w *Worker) reportBatch(batch []jetstream.Msg, started *sync.WaitGroup) {
	groups := map[int64][]jetstream.Msg{}
	var order []int64
	for _, m := range batch {
		from, err := schemas.ParseResultSubject(m.Subject())
		if err != nil {
			w.refuse(m.Subject(), refuseSubject, nil)
			_ = m.Term()
			continue
		}
		id := from.Job
		if _, ok := groups[id]; !ok {
			order = append(order, id)
		}
		groups[id] = append(groups[id], m)
	}
	if len(order) == 0 {
		return
	}
	h := w.hold(len(order))
	for i, id := range order {
		h.add(i, groups[id]...)
	}
	for i, id := range order {
		if started != nil {
			started.Add(1)
		}
		w.enqueue(id, groups[id], func() {
			h.done(i)
			if started != nil {
				started.Done()
			}
		})
	}
}

func (w *Worker) onJobReports(id int64, msgs []jetstream.Msg) {
	ctx, cancel := workCtx()
	defer cancel()
	reports := make([]schemas.Report, 0, len(msgs))
	redelivered := false
	applied := msgs[:0:0]
	for _, m := range msgs {
		var r schemas.Report
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			w.refuse(m.Subject(), refuseUndecodable, nil)
			_ = m.Ack()
			continue
		}
		from, _ := schemas.ParseResultSubject(m.Subject()) // onReports parsed it
		reason, err := w.verify(ctx, from, &r)
		if err != nil {
			w.settle(m, err)
			continue
		}
		if reason == refuseUnknown && !lastChance(m) {
			// this worker's registry may lag the agent's registration by
			// a moment: ask again before refusing
			_ = m.NakWithDelay(time.Second)
			continue
		}
		if reason != "" {
			w.refuse(m.Subject(), reason, &r)
			_ = m.Ack()
			continue
		}
		applied = append(applied, m)
		if meta, err := m.Metadata(); err == nil && meta.NumDelivered > 1 {
			redelivered = true
		}
		reports = append(reports, r)
	}
	if len(applied) == 0 {
		return
	}
	unlock := w.locks.lock(id)
	err := errNotHeld
	if cr := w.creations.take(id); cr != nil {
		err = w.commitHeld(cr, reports, "with_reports") // the job's first commit, with these
	} else if w.mayBeHeldElsewhere(id) {
		err = w.forward(ctx, id, reports) // to another process's held first commit
	}
	if errors.Is(err, errNotHeld) {
		err = w.process(ctx, id, reports, nil, nil, redelivered)
	}
	unlock()
	failpoint.Hit("report-done")
	for _, m := range applied {
		w.settle(m, err)
	}
	if failpoint.Armed("report-acked") {
		_ = w.nc.Flush() // the acks are on the wire before the crash
	}
	failpoint.Hit("report-acked")
}
