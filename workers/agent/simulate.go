package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/events"
	"github.com/fleetjob/fleetjob/schemas"
)

// SimConfig describes a load simulator: N agent identities served from one
// connection and one consumer, whose executor finishes every task at once
// with one line of output. It exists to test the control plane with
// thousands of hosts on one machine, the way Nomad's node simulator is
// used; it runs nothing.
type SimConfig struct {
	// Pool names the simulator's task pool; identities are "<pool>-<i>".
	Pool      string
	N         int
	FirstIP   netip.Addr
	CloudID   int64
	Heartbeat time.Duration
	Topology  schemas.Topology
	Version   string
}

// Simulator serves SimConfig.N simulated agents.
type Simulator struct {
	cfg SimConfig
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger
	ids []schemas.AgentInfo
	// acks are the tasks whose report is published, waiting for its ack
	// before the task is acked; a few waiters take them in order (acks come
	// back in order), where a goroutine each made thousands runnable at once
	// when a fan-out's acks came back, ahead of everything else the process
	// runs (the workers' and API's, in the tests and benchmarks)
	acks chan pendingAck
}

// pendingAck is a task whose messages are published: acked once they are
// stored, by deadline.
type pendingAck struct {
	task     jetstream.Msg
	futs     []jetstream.PubAckFuture
	deadline time.Time
}

// ackWaiters is how many goroutines wait for the simulator's publish acks;
// ackGrace is how long they wait for the acks on their way as it stops.
const (
	ackWaiters = 4
	ackGrace   = 2 * time.Second
)

// NewSimulator prepares a simulator; Run starts it.
func NewSimulator(cfg SimConfig, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger) (*Simulator, error) {
	if cfg.Pool == "" {
		cfg.Pool = "sim"
	}
	if cfg.Pool == schemas.DefaultPool || !schemas.ValidAgentID(cfg.Pool) {
		return nil, fmt.Errorf("simulator pool %q: use letters, digits, '-' or '_', not %q: %w", cfg.Pool, schemas.DefaultPool, schemas.ErrInvalid)
	}
	if cfg.N <= 0 || cfg.N > 100000 {
		return nil, fmt.Errorf("simulate %d agents: want 1 to 100000: %w", cfg.N, schemas.ErrInvalid)
	}
	if !cfg.FirstIP.IsValid() {
		cfg.FirstIP = netip.MustParseAddr("10.200.0.1")
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 5 * time.Second
	}
	s := &Simulator{cfg: cfg, nc: nc, js: js, log: log.With("component", "simulator", "pool", cfg.Pool)}
	ip := cfg.FirstIP
	now := time.Now().UTC()
	for i := range cfg.N {
		s.ids = append(s.ids, schemas.AgentInfo{
			ID: fmt.Sprintf("%s-%d", cfg.Pool, i), IP: ip.String(), CloudID: cfg.CloudID, Hostname: "simulated",
			Version: cfg.Version, Slots: 1 << 20, StartedAt: now, Pool: cfg.Pool, Simulated: true,
		})
		ip = ip.Next()
	}
	return s, nil
}

// Run serves tasks until ctx ends, then marks the identities stopping.
func (s *Simulator) Run(ctx context.Context) error {
	if err := s.register(ctx, false); err != nil {
		return err
	}
	sub, err := s.nc.Subscribe(schemas.PoolControlSubject(s.cfg.Pool), func(m *nats.Msg) {
		var req schemas.KillRequest
		_ = json.Unmarshal(m.Data, &req)
		b, _ := json.Marshal(schemas.KillReply{Unknown: req.ExecIDs}) // nothing runs for long here
		_ = m.Respond(b)
	})
	if err != nil {
		return fmt.Errorf("simulator control: %w", err)
	}
	defer sub.Unsubscribe()
	cons, err := s.js.CreateOrUpdateConsumer(ctx, schemas.StreamTasks, s.cfg.Topology.PoolConsumerConfig(s.cfg.Pool, max(4096, 2*s.cfg.N)))
	if err != nil {
		return fmt.Errorf("simulator consumer: %w", err)
	}
	s.acks = make(chan pendingAck, 4096)
	wctx, stopWaiters := context.WithCancel(context.WithoutCancel(ctx))
	var waiters sync.WaitGroup
	for range ackWaiters {
		waiters.Go(func() { s.awaitAcks(wctx) })
	}
	defer func() {
		// after the consumer closed (no onTask sends): the acks on their way
		// get a moment, then the rest are left to be delivered again
		close(s.acks)
		grace := time.AfterFunc(ackGrace, stopWaiters)
		waiters.Wait()
		grace.Stop()
		stopWaiters()
	}()
	cc, err := cons.Consume(s.onTask, jetstream.PullMaxMessages(2000))
	if err != nil {
		return fmt.Errorf("simulator consume: %w", err)
	}
	s.log.Info("simulated agents online", "agents", s.cfg.N, "first_ip", s.cfg.FirstIP)
	hb := time.NewTicker(s.cfg.Heartbeat)
	defer hb.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-hb.C:
			if err := s.register(ctx, false); err != nil && ctx.Err() == nil {
				s.log.Warn("heartbeat", "err", err)
			}
		}
	}
	cc.Stop()
	<-cc.Closed()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return s.register(sctx, true)
}

// register writes every identity into the agents bucket, asynchronously.
func (s *Simulator) register(ctx context.Context, stopping bool) error {
	now := time.Now().UTC()
	futs := make([]jetstream.PubAckFuture, 0, len(s.ids))
	for i := range s.ids {
		a := s.ids[i]
		a.LastSeen, a.Stopping = now, stopping
		b, _ := json.Marshal(a)
		f, err := s.js.PublishAsync(schemas.KVSubject(schemas.BucketAgents, a.ID), b)
		if err != nil {
			return fmt.Errorf("register simulated agents: %w", err)
		}
		futs = append(futs, f)
	}
	return events.Await(ctx, futs)
}

// onTask finishes a task at once: a finished report and one line of
// output, acked once they are stored. The line rides in the report when
// the task asks for it (schemas.Task.InlineLog) and it fits the task's
// bound, as a real agent's short output does; otherwise it is a LOGS
// message of its own.
func (s *Simulator) onTask(m jetstream.Msg) {
	var t schemas.Task
	agent, ok := schemas.AgentOfTaskSubject(m.Subject())
	if json.Unmarshal(m.Data(), &t) != nil || !ok {
		_ = m.Term()
		return
	}
	now := time.Now().UTC()
	code := 0
	base := schemas.Report{V: schemas.MessageVersion, JobID: t.JobID, Step: t.Step, Host: t.Host, Attempt: t.Attempt,
		ExecID: t.ExecID, AgentID: agent, Phase: t.Phase, StartedAt: now}
	finished := base // done at once: no started report (see startedDelay)
	finished.Kind, finished.Status, finished.ExitCode, finished.EndedAt, finished.Lines = schemas.ReportFinished, schemas.HostSuccess, &code, now, 1
	output := "simulated " + t.ExecID + " on " + t.Target.IP
	var msgs []*nats.Msg
	if t.InlineLog && len(output) <= t.InlineLimit() {
		finished.Log = &output
	} else {
		logm := nats.NewMsg(schemas.LogRef{Job: t.JobID, Step: t.Step, Phase: t.Phase, Host: t.Host, Attempt: t.Attempt,
			Pool: s.cfg.Pool, Agent: agent}.Subject())
		logm.Data = []byte(output)
		logm.Header.Set(schemas.HdrFirstLine, "0")
		logm.Header.Set(schemas.HdrLineCount, "1")
		logm.Header.Set(schemas.HdrFinal, "1")
		logm.Header.Set(nats.MsgIdHdr, t.ExecID+".0.f")
		msgs = append(msgs, logm)
	}
	b, _ := json.Marshal(finished)
	rm := nats.NewMsg(schemas.ResultSubject(s.cfg.Pool, agent, t.JobID))
	rm.Data = b
	rm.Header.Set(nats.MsgIdHdr, t.ExecID+"."+finished.Kind)
	msgs = append(msgs, rm)
	futs := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, pm := range msgs {
		f, err := s.js.PublishMsgAsync(pm)
		if err != nil {
			_ = m.NakWithDelay(time.Second)
			return
		}
		futs = append(futs, f)
	}
	s.acks <- pendingAck{task: m, futs: futs, deadline: time.Now().Add(30 * time.Second)}
}

// awaitAcks acks each task once its messages are stored, or asks for it
// again if they are not by its deadline or once ctx ends.
func (s *Simulator) awaitAcks(ctx context.Context) {
	for p := range s.acks {
		ctx, cancel := context.WithDeadline(ctx, p.deadline)
		err := events.Await(ctx, p.futs)
		cancel()
		if err != nil {
			_ = p.task.NakWithDelay(time.Second)
			continue
		}
		_ = p.task.Ack()
	}
}

// SimulatedIP returns the IP of identity i of a simulator starting at first.
func SimulatedIP(first netip.Addr, i int) netip.Addr {
	for range i {
		first = first.Next()
	}
	return first
}
