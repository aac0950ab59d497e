// Package agent is the worker bound to one host: it takes that host's tasks
// from its durable consumer, runs them (scripts in their own process group),
// streams their output in chunks, reports start and result, and answers
// kill requests. It talks only to NATS.
package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/internal/agentkeys"
	"github.com/fleetjob/fleetjob/schemas"
)

// Config describes one agent.
type Config struct {
	ID       string
	IP       string
	CloudID  int64
	HostID   int64 // the CMDB's numeric host id (bk_host_id), 0 when unknown
	Hostname string
	Labels   map[string]string
	Version  string
	// DataDir holds the journal and the scripts being run.
	DataDir string
	// Slots bounds the tasks the agent runs at once.
	Slots int
	// Heartbeat is how often the agent refreshes its registry entry.
	Heartbeat time.Duration
	// ShutdownGrace is how long running scripts may finish after a stop
	// signal before they are killed and reported interrupted.
	ShutdownGrace time.Duration
	Topology      schemas.Topology
}

// Metrics are the agent's Prometheus collectors.
type Metrics struct {
	Running  prometheus.Gauge
	Finished *prometheus.CounterVec
	Duration prometheus.Histogram
	LogBytes prometheus.Counter
}

// NewMetrics registers agent metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Running: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fleetjob_agent_tasks_running", Help: "Tasks running on agents of this process."}),
		Finished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetjob_agent_tasks_finished_total",
			Help: "Tasks finished on agents of this process, by status."}, []string{"status"}),
		Duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fleetjob_agent_task_seconds",
			Help: "Task run time.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 16)}),
		LogBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetjob_agent_log_bytes_total", Help: "Output bytes streamed."}),
	}
	reg.MustRegister(m.Running, m.Finished, m.Duration, m.LogBytes)
	return m
}

// startedDelay is how long a task runs before the agent reports it started.
const startedDelay = 50 * time.Millisecond

// Agent runs one host's tasks.
type Agent struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	m       *Metrics
	log     *slog.Logger
	journal *journal
	// curve opens the sensitive values sealed to this agent (its public
	// half is the enrolment's XKey).
	curve   nkeys.KeyPair
	spool   string        // where running scripts write their output
	files   *spoolWatcher // says when spool files are written
	started time.Time

	mu        sync.Mutex
	running   map[string]*execution
	cancelled map[string]time.Time
	wg        sync.WaitGroup
	// halt ends when the agent gives up on storing what its executions
	// produced (shutdown, after the grace): until then an execution's
	// output is retried for as long as NATS takes to come back.
	halt    context.Context
	haltNow context.CancelFunc
}

// New prepares an agent; Run starts it.
func New(cfg Config, nc *nats.Conn, js jetstream.JetStream, m *Metrics, log *slog.Logger) (*Agent, error) {
	if !schemas.ValidAgentID(cfg.ID) {
		return nil, fmt.Errorf("agent id %q: use 1-64 letters, digits, '-' or '_': %w", cfg.ID, schemas.ErrInvalid)
	}
	h := schemas.Host{CloudID: cfg.CloudID, IP: cfg.IP}
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("agent ip: %w", err)
	}
	cfg.IP = h.IP
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("agent data dir: %w", err)
	}
	cfg.DataDir = dir // scripts run with their directory as cwd
	if cfg.Slots <= 0 {
		cfg.Slots = 64
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 5 * time.Second
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	keys, err := agentkeys.LoadOrCreate(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	halt, haltNow := context.WithCancel(context.Background())
	return &Agent{
		cfg: cfg, nc: nc, js: js, m: m, curve: keys.Curve,
		log:       log.With("component", "agent", "agent", cfg.ID),
		running:   map[string]*execution{},
		cancelled: map[string]time.Time{},
		halt:      halt, haltNow: haltNow,
	}, nil
}

// Run serves tasks until ctx ends, then stops taking tasks, lets running
// scripts finish within the shutdown grace, kills and reports the rest as
// interrupted, and marks the agent stopping in the registry. If NATS
// closes the connection for good (it refused the agent's credentials:
// ErrRevoked) it kills running scripts at once and returns.
func (a *Agent) Run(ctx context.Context) error {
	var err error
	if a.journal, err = openJournal(a.cfg.DataDir, a.cfg.ID); err != nil {
		return err
	}
	defer a.journal.close()
	a.spool = spoolDir(a.cfg.DataDir, a.cfg.ID)
	if err := os.MkdirAll(a.spool, 0o700); err != nil {
		return fmt.Errorf("agent output dir: %w", err)
	}
	a.files = watchSpool(a.spool)
	defer a.files.close() // after shutdown: no execution follows a file any more
	if err := os.MkdirAll(filepath.Join(a.cfg.DataDir, "scripts"), 0o755); err != nil {
		return fmt.Errorf("agent scripts dir: %w", err)
	}
	a.started = time.Now().UTC()
	if err := a.recover(ctx); err != nil {
		return err
	}
	if err := a.register(ctx, false); err != nil {
		return err
	}
	sub, err := a.nc.Subscribe(schemas.ControlSubject(schemas.DefaultPool, a.cfg.ID), a.onControl)
	if err != nil {
		return fmt.Errorf("control subscription: %w", err)
	}
	defer sub.Unsubscribe()
	// the consumer is made when the agent is enrolled (natsauth.PrepareAgent):
	// an agent's credentials create no consumer
	cons, err := a.js.Consumer(ctx, schemas.StreamTasks, schemas.AgentConsumer(a.cfg.ID))
	if err != nil {
		return fmt.Errorf("task consumer %s (made at enrolment): %w", schemas.AgentConsumer(a.cfg.ID), err)
	}
	cc, err := cons.Consume(a.onTask, jetstream.PullMaxMessages(a.cfg.Slots))
	if err != nil {
		return fmt.Errorf("consume tasks: %w", err)
	}
	a.log.Info("agent online", "ip", a.cfg.IP, "cloud_id", a.cfg.CloudID)

	// nats.go closes the connection only for good (see connectionLost)
	closed := a.nc.StatusChanged(nats.CLOSED)
	defer a.nc.RemoveStatusListener(closed)
	var lost error
	if a.nc.IsClosed() {
		lost = a.connectionLost()
	}
	hb := time.NewTicker(a.cfg.Heartbeat)
	defer hb.Stop()
	for done := lost != nil; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-closed:
			lost, done = a.connectionLost(), true
		case <-hb.C:
			if err := a.register(ctx, false); err != nil && ctx.Err() == nil {
				a.log.Warn("heartbeat", "err", err)
			}
			a.forgetCancelled()
		}
	}
	cc.Stop() // undelivered and buffered tasks come back after AckWait
	<-cc.Closed()
	if lost != nil {
		a.abandon()
		return lost
	}
	a.shutdown()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := a.register(sctx, true); err != nil {
		a.log.Warn("deregister", "err", err)
	}
	return nil
}

// haltGrace is how long killed executions get, at shutdown, to store
// their output and report before the agent stops retrying: what is left is
// in the spool and the journal for the next start.
const haltGrace = 10 * time.Second

// shutdown waits for running scripts within the grace, then kills the rest
// and, haltGrace later, stops retrying their output and reports.
func (a *Agent) shutdown() {
	defer a.haltNow()
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(a.cfg.ShutdownGrace):
	}
	a.mu.Lock()
	for _, e := range a.running {
		e.kill(killShutdown)
	}
	a.mu.Unlock()
	select {
	case <-done:
		return
	case <-time.After(killGrace + haltGrace):
	}
	a.haltNow()
	<-done
}

func (a *Agent) register(ctx context.Context, stopping bool) error {
	host, _ := os.Hostname()
	if a.cfg.Hostname != "" {
		host = a.cfg.Hostname
	}
	info := schemas.AgentInfo{
		ID: a.cfg.ID, IP: a.cfg.IP, CloudID: a.cfg.CloudID, Hostname: host,
		Labels: a.cfg.Labels, Version: a.cfg.Version, Slots: a.cfg.Slots, HostID: a.cfg.HostID,
		StartedAt: a.started, LastSeen: time.Now().UTC(), Stopping: stopping,
	}
	b, _ := json.Marshal(info)
	// a put on its own key's subject: the agent may write no other key
	// and needs no bucket lookup
	if _, err := a.js.Publish(ctx, schemas.KVSubject(schemas.BucketAgents, a.cfg.ID), b); err != nil {
		return fmt.Errorf("register agent: %w", err)
	}
	return nil
}

// logSubject is the subject of t's output, which carries this agent's id.
func (a *Agent) logSubject(t *schemas.Task) string {
	return schemas.LogRef{Job: t.JobID, Step: t.Step, Phase: t.Phase, Host: t.Host, Attempt: t.Attempt,
		Pool: schemas.DefaultPool, Agent: a.cfg.ID}.Subject()
}

func (a *Agent) report(t *schemas.Task, kind string) schemas.Report {
	return schemas.Report{
		V: schemas.MessageVersion, Kind: kind, JobID: t.JobID, Step: t.Step,
		Host: t.Host, Attempt: t.Attempt, ExecID: t.ExecID, AgentID: a.cfg.ID, Phase: t.Phase,
	}
}

// publish sends a report and waits for the stream's ack, retrying briefly.
func (a *Agent) publish(ctx context.Context, r *schemas.Report) error {
	b, _ := json.Marshal(r)
	m := nats.NewMsg(schemas.ResultSubject(schemas.DefaultPool, a.cfg.ID, r.JobID))
	m.Data = b
	m.Header.Set(nats.MsgIdHdr, r.ExecID+"."+r.Kind)
	var err error
	for i := 0; i < 5; i++ {
		// each attempt waits a bounded time: a request lost in a
		// failover must not use up the caller's whole wait
		actx, cancel := context.WithTimeout(ctx, schemas.PublishAsyncTimeout)
		_, err = a.js.PublishMsg(actx, m)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(i+1) * 200 * time.Millisecond)
	}
	return fmt.Errorf("publish report %s: %w", r.ExecID, err)
}

// onTask decides what to do with one delivery of a task.
func (a *Agent) onTask(m jetstream.Msg) {
	var t schemas.Task
	if err := json.Unmarshal(m.Data(), &t); err != nil || t.ExecID == "" {
		a.log.Error("undecodable task; dropped", "err", err)
		_ = m.Term()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a.mu.Lock()
	if e, ok := a.running[t.ExecID]; ok { // a redelivery of what runs now
		e.mu.Lock()
		e.msgAck = func() { _ = m.InProgress() }
		e.mu.Unlock()
		a.mu.Unlock()
		_ = m.InProgress()
		return
	}
	_, cancelled := a.cancelled[t.ExecID]
	a.mu.Unlock()

	if je, ok := a.journal.lookup(t.ExecID); ok {
		r := je.Report
		if je.Op != "end" || r == nil {
			rep := a.report(&t, schemas.ReportFinished)
			rep.Status, rep.StartedAt, rep.EndedAt = schemas.HostInterrupted, je.At, time.Now().UTC()
			rep.Error = "delivered again after it had started; it was not run again"
			r = &rep
			if err := a.journal.end(r); err != nil {
				a.log.Error("journal", "err", err)
			}
		}
		a.finish(ctx, m, r)
		return
	}
	var refuse string
	var status schemas.HostStatus
	switch {
	case cancelled:
		status, refuse = schemas.HostStopped, "stopped before it started"
	case time.Now().After(t.NotAfter):
		status, refuse = schemas.HostAgentOffline, "the task expired before the agent could start it"
	}
	if refuse != "" {
		r := a.report(&t, schemas.ReportFinished)
		r.Status, r.Error, r.EndedAt = status, refuse, time.Now().UTC()
		if err := a.journal.end(&r); err != nil {
			a.log.Error("journal", "err", err)
		}
		a.finish(ctx, m, &r)
		return
	}
	start := time.Now().UTC()
	if err := a.journal.start(&t, start); err != nil {
		a.log.Error("journal start; task handed back", "exec", t.ExecID, "err", err)
		_ = m.NakWithDelay(5 * time.Second)
		return
	}
	run, err := a.openTask(&t) // the journal keeps it sealed
	if err != nil {
		r := a.report(&t, schemas.ReportFinished)
		r.Status, r.Error, r.StartedAt, r.EndedAt = schemas.HostFailed, "cannot open the sensitive values: "+err.Error(), start, time.Now().UTC()
		if err := a.journal.end(&r); err != nil {
			a.log.Error("journal", "err", err)
		}
		a.finish(ctx, m, &r)
		return
	}
	e := &execution{task: run, start: start, done: make(chan struct{}), msgAck: func() { _ = m.InProgress() }}
	a.mu.Lock()
	a.running[t.ExecID] = e
	a.mu.Unlock()
	a.wg.Add(1)
	go a.execute(e, m)
}

// finish publishes a final report and acks the delivery once it is stored.
func (a *Agent) finish(ctx context.Context, m jetstream.Msg, r *schemas.Report) {
	if err := a.publish(ctx, r); err != nil {
		a.log.Error("report not published; task will be redelivered", "exec", r.ExecID, "err", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	a.m.Finished.WithLabelValues(r.Status.String()).Inc()
	_ = m.Ack()
}

func (a *Agent) execute(e *execution, m jetstream.Msg) {
	defer a.wg.Done()
	t := e.task
	a.m.Running.Inc()
	defer a.m.Running.Dec()
	ctx := context.Background()
	start := e.start
	// A task that ends within startedDelay is reported once, finished with
	// its start time; only longer ones are reported started as well. Most
	// fleet tasks are short: this halves their reports and commits.
	rs := a.report(t, schemas.ReportStarted)
	rs.StartedAt = start
	startedSent := make(chan struct{})
	startedTimer := time.AfterFunc(startedDelay, func() {
		defer close(startedSent)
		if err := a.publish(ctx, &rs); err != nil {
			a.log.Warn("started report", "exec", t.ExecID, "err", err)
		}
	})
	stopHB := make(chan struct{})
	go func() {
		tick := time.NewTicker(a.cfg.Topology.TaskWait / 3)
		defer tick.Stop()
		for {
			select {
			case <-stopHB:
				return
			case <-tick.C:
				e.mu.Lock()
				ack := e.msgAck
				e.mu.Unlock()
				ack()
			}
		}
	}()
	logs := newLogStream(a.js, a.logSubject(t), t, func(n int) { a.m.LogBytes.Add(float64(n)) })
	var o outcome
	switch t.Kind {
	case schemas.StepScript:
		o = a.runScript(e, logs)
	case schemas.TaskUpload:
		o = a.runUpload(e, logs)
	case schemas.TaskDownload:
		o = a.runDownload(e, logs)
	default:
		o = failed("this agent cannot run %q tasks", t.Kind)
		close(e.done)
	}
	// The output is stored before the result is reported, however long
	// NATS takes to come back (a failover, a restart): a log is never
	// reported complete with lines missing. A small output of a task that
	// asks for it rides in the report instead (one message, not two), and
	// is journaled with it.
	var lines int
	var inline *string
	var err error
	if t.InlineLog {
		lines, inline, err = logs.CloseInline(a.halt, t.InlineLimit())
	} else {
		lines, err = logs.Close(a.halt)
	}
	close(stopHB)
	if !startedTimer.Stop() {
		<-startedSent // in order: the start before the result
	}
	if err != nil {
		// The agent is stopping with output not stored: the execution
		// stays unfinished in the journal with its spool file, and the
		// next start publishes the rest and reports it interrupted.
		a.log.Error("output not stored before the agent stopped; the next start stores it", "exec", t.ExecID, "err", err)
		a.mu.Lock()
		delete(a.running, t.ExecID)
		a.mu.Unlock()
		return
	}
	r := a.report(t, schemas.ReportFinished)
	r.Status, r.ExitCode, r.Error, r.Files = o.status, o.exitCode, o.err, o.files
	r.StartedAt, r.EndedAt, r.Lines, r.Log = start, time.Now().UTC(), lines, inline
	a.m.Duration.Observe(r.EndedAt.Sub(start).Seconds())
	jerr := a.journal.end(&r)
	if jerr != nil {
		a.log.Error("journal end", "exec", t.ExecID, "err", jerr)
	}
	// An output that is only in the report, not journaled with it, keeps
	// its spool file: a restart before the report is stored publishes it
	// to LOGS (recover).
	if jerr == nil || inline == nil {
		os.Remove(spoolPath(a.spool, t.ExecID))
	}
	a.mu.Lock()
	delete(a.running, t.ExecID)
	a.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	a.finish(pctx, m, &r)
}

// onControl answers kill requests: running executions are killed (and will
// report stopped); others are remembered so they never start.
func (a *Agent) onControl(msg *nats.Msg) {
	var req schemas.KillRequest
	if err := json.Unmarshal(msg.Data, &req); err != nil {
		return
	}
	var rep schemas.KillReply
	now := time.Now()
	a.mu.Lock()
	for _, ex := range req.ExecIDs {
		if e, ok := a.running[ex]; ok {
			e.kill(killStop)
			rep.Killed = append(rep.Killed, ex)
			continue
		}
		a.cancelled[ex] = now
		rep.Unknown = append(rep.Unknown, ex)
	}
	a.mu.Unlock()
	b, _ := json.Marshal(rep)
	if msg.Reply != "" {
		_ = msg.Respond(b)
	}
}

// forgetCancelled drops old cancellations; their tasks have long expired.
func (a *Agent) forgetCancelled() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for ex, at := range a.cancelled {
		if time.Since(at) > time.Hour {
			delete(a.cancelled, ex)
		}
	}
}
