// Package orchestrator holds the workers' job state machines: they take
// commands and reports from JetStream, expand jobs into per-host tasks,
// dispatch them to agents, record results exactly once, enforce deadlines
// and stops, and finish jobs. Workers are stateless; any of them may die at
// any instant and another carries on from the KV state.
package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
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
}

// Worker drives jobs.
type Worker struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	jobs   jetstream.KeyValue
	active jetstream.KeyValue
	leases jetstream.KeyValue
	dead   jetstream.KeyValue
	dir    Directory
	cache  *statuscache.Cache
	pub    *events.Publisher
	m      *Metrics
	log    *slog.Logger

	locks keyedMutex
	sem   chan struct{}
	wg    sync.WaitGroup

	specMu sync.Mutex
	specs  map[int64]*schemas.JobSpec
}

// New builds a worker. The topology must already exist.
func New(ctx context.Context, cfg Config, nc *nats.Conn, js jetstream.JetStream, dir Directory, cache *statuscache.Cache, m *Metrics, log *slog.Logger) (*Worker, error) {
	if cfg.Parallel <= 0 {
		cfg.Parallel = 64
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = time.Second
	}
	w := &Worker{
		cfg: cfg, nc: nc, js: js, dir: dir, cache: cache, m: m,
		log:   log.With("component", "worker", "worker", cfg.Name),
		pub:   events.NewPublisher(js, "fleetjob/worker/"+cfg.Name),
		sem:   make(chan struct{}, cfg.Parallel),
		specs: map[int64]*schemas.JobSpec{},
	}
	var err error
	for name, dst := range map[string]*jetstream.KeyValue{
		schemas.BucketJobs: &w.jobs, schemas.BucketActive: &w.active, schemas.BucketLeases: &w.leases,
		schemas.BucketDeadLetters: &w.dead,
	} {
		if *dst, err = js.KeyValue(ctx, name); err != nil {
			return nil, fmt.Errorf("bucket %s: %w", name, err)
		}
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
	res, err := w.js.CreateOrUpdateConsumer(ctx, schemas.StreamResults, w.cfg.Topology.ResultConsumer())
	if err != nil {
		return fmt.Errorf("result consumer: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return pull.Batches(gctx, cmds, 256, w.onCommands) })
	g.Go(func() error { return pull.Batches(gctx, res, 1024, w.onReports) })
	g.Go(func() error { return w.sweep(gctx) })
	err = g.Wait()
	w.wg.Wait()
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
	for _, m := range batch {
		w.spawn(func() { w.onCommand(m) })
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
		err = w.submit(ctx, id, m.Data(), redelivered)
		unlock()
	case schemas.SubjStop:
		var cmd schemas.StopCommand
		if err = json.Unmarshal(m.Data(), &cmd); err != nil {
			err = fmt.Errorf("undecodable stop command: %w: %w", schemas.ErrInvalid, err)
			break
		}
		unlock := w.locks.lock(cmd.JobID)
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

// maxDeliver is the delivery limit of the consumer a message came from;
// 0 means unlimited.
func (w *Worker) maxDeliver(m jetstream.Msg) int {
	if strings.HasPrefix(m.Subject(), "fleetjob.cmd.") {
		return w.cfg.Topology.MaxDeliver
	}
	return 0
}

// submit creates a job from its command (unless a previous delivery did)
// and dispatches its first hosts.
func (w *Worker) submit(ctx context.Context, id int64, data []byte, redelivered bool) error {
	var cmd schemas.SubmitCommand
	if err := json.Unmarshal(data, &cmd); err != nil {
		return fmt.Errorf("decode submit %d: %w: %w", id, schemas.ErrInvalid, err)
	}
	spec := &cmd.Spec
	if err := spec.Normalize(); err != nil {
		return fmt.Errorf("submit %d: %w", id, err)
	}
	specJSON, _ := json.Marshal(spec)
	if _, err := w.jobs.Create(ctx, schemas.KeyJobSpec(id), specJSON); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("store spec %d: %w", id, err)
	}
	// The job is created already advanced (its first hosts dispatched):
	// one state write, not a create and then a compare-and-set.
	now := time.Now().UTC()
	st := schemas.NewJobState(id, spec, now)
	t := newTxn(spec, st, now, w.dir)
	t.created = true
	t.emit(events.JobCreated, t.jobID(), t.jobID(), schemas.Summarize(spec, st))
	t.advance()
	if err := w.storeResults(ctx, spec, st, t.results); err != nil {
		return err
	}
	stJSON, _ := json.Marshal(st)
	// Index the job for the sweeper first: a crash after the create must
	// not leave a job no deadline ever looks at. A stale entry is harmless.
	if _, err := w.active.Put(ctx, strconv.FormatInt(id, 10), nil); err != nil {
		return fmt.Errorf("index active job %d: %w", id, err)
	}
	rev, err := w.jobs.Create(ctx, schemas.KeyJobState(id), stJSON)
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		// an earlier delivery created it; carry on from there
		return w.process(ctx, id, nil, nil, nil, true)
	case err != nil:
		return fmt.Errorf("create job %d: %w", id, err)
	}
	w.m.JobsCreated.Inc()
	w.rememberSpec(id, spec)
	return w.effects(ctx, spec, st, rev, t)
}

func (w *Worker) onReports(batch []jetstream.Msg) {
	groups := map[int64][]jetstream.Msg{}
	var order []int64
	for _, m := range batch {
		id, err := schemas.JobOfResultSubject(m.Subject())
		if err != nil {
			w.log.Error("report on unexpected subject; dropped", "subject", m.Subject())
			_ = m.Term()
			continue
		}
		if _, ok := groups[id]; !ok {
			order = append(order, id)
		}
		groups[id] = append(groups[id], m)
	}
	for _, id := range order {
		msgs := groups[id]
		w.spawn(func() { w.onJobReports(id, msgs) })
	}
}

func (w *Worker) onJobReports(id int64, msgs []jetstream.Msg) {
	ctx, cancel := workCtx()
	defer cancel()
	reports := make([]schemas.Report, 0, len(msgs))
	redelivered := false
	for _, m := range msgs {
		var r schemas.Report
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			w.log.Error("bad report; dropped", "subject", m.Subject(), "err", err)
			continue
		}
		if meta, err := m.Metadata(); err == nil && meta.NumDelivered > 1 {
			redelivered = true
		}
		reports = append(reports, r)
	}
	unlock := w.locks.lock(id)
	err := w.process(ctx, id, reports, nil, nil, redelivered)
	unlock()
	failpoint.Hit("report-done")
	for _, m := range msgs {
		w.settle(m, err)
	}
	if failpoint.Armed("report-acked") {
		_ = w.nc.Flush() // the acks are on the wire before the crash
	}
	failpoint.Hit("report-acked")
}

// spec returns a job's spec, cached: specs never change.
func (w *Worker) spec(ctx context.Context, id int64) (*schemas.JobSpec, error) {
	w.specMu.Lock()
	s, ok := w.specs[id]
	w.specMu.Unlock()
	if ok {
		return s, nil
	}
	s, err := w.cache.LoadSpec(ctx, id)
	if err != nil {
		return nil, err
	}
	w.rememberSpec(id, s)
	return s, nil
}

func (w *Worker) rememberSpec(id int64, s *schemas.JobSpec) {
	w.specMu.Lock()
	defer w.specMu.Unlock()
	if len(w.specs) > 10000 {
		clear(w.specs)
	}
	w.specs[id] = s
}

func (w *Worker) loadState(ctx context.Context, id int64) (*schemas.JobState, uint64, error) {
	e, err := w.jobs.Get(ctx, schemas.KeyJobState(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, schemas.NotFound("job %d does not exist", id)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("load job %d: %w", id, err)
	}
	var st schemas.JobState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return nil, 0, fmt.Errorf("decode job %d: %w", id, err)
	}
	return &st, e.Revision(), nil
}

// process applies reports (and a stop) to a job, advances it, commits the
// new state by compare-and-set, and only then performs the effects. A lost
// race reloads and recomputes; resend republishes tasks of dispatched hosts
// in case an earlier attempt committed but died before publishing.
func (w *Worker) process(ctx context.Context, id int64, reports []schemas.Report, stop *schemas.StopCommand, op *schemas.OpCommand, resend bool) error {
	start := time.Now()
	defer func() { w.m.ProcessSeconds.Observe(time.Since(start).Seconds()) }()
	spec, err := w.spec(ctx, id)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		st, rev, err := w.loadState(ctx, id)
		if err != nil {
			return err
		}
		if schemas.JobFinal(st.Status) && op == nil && !resend {
			return nil // late reports for a finished job
		}
		t := newTxn(spec, st, time.Now().UTC(), w.dir)
		var replayed []schemas.Report
		if resend {
			// A redelivered message may have been committed by a worker that
			// died before its effects: redo those from the record.
			replayed = t.recorded(reports)
			t.replayEvents()
		}
		if schemas.JobFinal(st.Status) && op == nil {
			return w.replay(ctx, spec, st, rev, t, replayed)
		}
		for _, r := range reports {
			t.apply(r)
		}
		if stop != nil {
			t.stop(stop.By, stop.Reason)
		}
		if op != nil {
			if err := t.op(*op); err != nil {
				return fmt.Errorf("job %d: %w", id, err)
			}
		}
		t.advance()
		if resend {
			t.resend()
		}
		if t.reopened { // index it for the sweeper before it runs again
			if _, err := w.active.Put(ctx, strconv.FormatInt(id, 10), nil); err != nil {
				return fmt.Errorf("index reopened job %d: %w", id, err)
			}
		}
		if t.changed {
			st.UpdatedAt = t.now
			if err := w.storeResults(ctx, spec, st, t.results); err != nil {
				return err
			}
			b, _ := json.Marshal(st)
			if len(reports) > 0 {
				failpoint.Hit("report-computed") // the new state is ready, not yet committed
			}
			newRev, err := w.jobs.Update(ctx, schemas.KeyJobState(id), b, rev)
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				w.m.CASConflicts.Inc()
				if attempt >= 50 {
					return fmt.Errorf("job %d: state kept changing under us", id)
				}
				time.Sleep(time.Duration(rand.IntN(5*(attempt+1))) * time.Millisecond)
				continue
			}
			if err != nil {
				return fmt.Errorf("commit job %d: %w", id, err)
			}
			rev = newRev
			if len(reports) > 0 {
				failpoint.Hit("report-committed")
			}
		}
		if err := w.replayResults(ctx, spec, st, t, replayed); err != nil {
			return err
		}
		return w.effects(ctx, spec, st, rev, t)
	}
}

// replay redoes the effects of a commit whose worker may have died before
// them, for a job that commit finished: the cache, the events (replayEvents
// was called; their ids are stable, so the EVENTS stream drops what was
// published already) and the active index.
func (w *Worker) replay(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState, rev uint64, t *txn, reports []schemas.Report) error {
	if err := w.replayResults(ctx, spec, st, t, reports); err != nil {
		return err
	}
	t.finished = true
	return w.effects(ctx, spec, st, rev, t)
}

// replayResults re-emits the host results of reports already recorded.
func (w *Worker) replayResults(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState, t *txn, reports []schemas.Report) error {
	for _, r := range reports {
		hr, ok, err := w.hostResult(ctx, spec, st, r.Step, r.Phase, r.Host)
		if err != nil {
			return err
		}
		if ok && hr.Attempt == r.Attempt {
			t.replayResult(r.ExecID, hr)
		}
	}
	return nil
}

// hostResult finds a unit's stored result: in the state of a small job,
// in its own key otherwise.
func (w *Worker) hostResult(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState, step int, phase string, idx int) (schemas.HostResult, bool, error) {
	if spec.InlineResults() {
		hr, ok := st.Result(step, phase, idx)
		return hr, ok, nil
	}
	e, err := w.jobs.Get(ctx, schemas.KeyHostResult(st.ID, step, phase, idx))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return schemas.HostResult{}, false, nil
	}
	if err != nil {
		return schemas.HostResult{}, false, fmt.Errorf("load host result: %w", err)
	}
	var hr schemas.HostResult
	if err := json.Unmarshal(e.Value(), &hr); err != nil {
		return schemas.HostResult{}, false, nil
	}
	return hr, true, nil
}

// storeResults records final host results before the state commit that
// makes them count: a small job's in the state itself (committed with it),
// a larger job's each in its own key (rewriting one is harmless).
func (w *Worker) storeResults(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState, results []schemas.HostResult) error {
	if spec.InlineResults() {
		st.PutResults(results)
		return nil
	}
	futs := make([]jetstream.PubAckFuture, 0, len(results))
	for _, r := range results {
		b, _ := json.Marshal(r)
		f, err := w.js.PublishAsync("$KV."+schemas.BucketJobs+"."+schemas.KeyHostResult(st.ID, r.Step, r.Phase, r.Index), b)
		if err != nil {
			return fmt.Errorf("store host result: %w", err)
		}
		futs = append(futs, f)
	}
	return events.Await(ctx, futs)
}

// effects runs after a commit: tasks, events, cache, stop side effects.
func (w *Worker) effects(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState, rev uint64, t *txn) error {
	var futs []jetstream.PubAckFuture
	for _, rt := range t.tasks {
		b, _ := json.Marshal(rt.task)
		m := nats.NewMsg(schemas.TaskSubject(rt.pool, rt.agent, st.ID))
		m.Data = b
		m.Header.Set(nats.MsgIdHdr, rt.task.ExecID)
		f, err := w.js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("publish task %s: %w", rt.task.ExecID, err)
		}
		futs = append(futs, f)
	}
	// The cache is written before the events go out, so whoever reacts to
	// an event reads a state at least as new as the event.
	switch {
	case t.created:
		if err := w.cache.Created(ctx, spec, st, rev, statuscache.BuildRows(spec, st, nil)); err != nil {
			w.log.Warn("cache new job", "job", st.ID, "err", err)
		}
	case t.changed || len(t.touched) > 0:
		if err := w.cache.Update(ctx, spec, st, rev, t.rows()); err != nil {
			w.log.Warn("cache update", "job", st.ID, "err", err)
		}
	}
	evf, err := w.pub.PublishAsync(t.events...)
	if err != nil {
		return err
	}
	futs = append(futs, evf...)
	if err := events.Await(ctx, futs); err != nil {
		return err
	}
	w.m.TasksDispatched.Add(float64(len(t.tasks)))
	for _, r := range t.results {
		w.m.HostsFinished.WithLabelValues(r.Status.String()).Inc()
	}
	if t.stopped {
		if err := w.purgeTasks(ctx, st.ID); err != nil {
			return err
		}
	}
	if len(t.kills) > 0 {
		w.kill(ctx, st.ID, t.kills)
	}
	if t.finished {
		if t.changed { // not again when replayed
			w.m.JobsFinished.WithLabelValues(st.Status).Inc()
		}
		if err := w.active.Delete(ctx, strconv.FormatInt(st.ID, 10)); err != nil {
			w.log.Warn("unindex finished job", "job", st.ID, "err", err)
		}
		w.specMu.Lock()
		delete(w.specs, st.ID)
		w.specMu.Unlock()
	}
	return nil
}

// purgeTasks drops a stopped job's tasks that no agent has taken yet.
func (w *Worker) purgeTasks(ctx context.Context, id int64) error {
	s, err := w.js.Stream(ctx, schemas.StreamTasks)
	if err != nil {
		return fmt.Errorf("tasks stream: %w", err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(schemas.TaskPurgeSubject(id))); err != nil {
		return fmt.Errorf("purge tasks of job %d: %w", id, err)
	}
	return nil
}

// kill asks agents to kill their executions of a job. Agents answer with a
// terminate acknowledgement; running executions then report stopped.
// Agents that do not answer are retried by the sweeper's kicks until the
// stop grace ends.
func (w *Worker) kill(ctx context.Context, id int64, kills map[agentRef][]string) {
	var wg sync.WaitGroup
	for agent, execs := range kills {
		wg.Go(func() {
			b, _ := json.Marshal(schemas.KillRequest{V: schemas.MessageVersion, JobID: id, ExecIDs: execs})
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			msg, err := w.nc.RequestWithContext(rctx, schemas.ControlSubject(agent.pool, agent.id), b)
			if err != nil {
				w.log.Warn("kill request unanswered", "job", id, "agent", agent.id, "err", err)
				return
			}
			var rep schemas.KillReply
			_ = json.Unmarshal(msg.Data, &rep)
			w.log.Info("terminate acknowledged", "job", id, "agent", agent.id, "killed", len(rep.Killed), "cancelled", len(rep.Unknown))
		})
	}
	wg.Wait()
}
