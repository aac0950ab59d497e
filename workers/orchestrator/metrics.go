package orchestrator

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/schemas"
)

// Metrics are the workers' Prometheus collectors.
type Metrics struct {
	JobsCreated     prometheus.Counter
	JobsFinished    *prometheus.CounterVec
	HostsFinished   *prometheus.CounterVec
	TasksDispatched prometheus.Counter
	CASConflicts    prometheus.Counter
	Kicks           prometheus.Counter
	KicksHeld       prometheus.Counter
	// FirstCommits counts held first commits by how they were written;
	// EarlyReports the reports delivered again because their job had none.
	FirstCommits *prometheus.CounterVec
	EarlyReports prometheus.Counter
	// ForwardedReports counts reports forwarded to another process's
	// held first commit and committed there (forward.go).
	ForwardedReports prometheus.Counter
	// PartitionsOwned is, per worker, the result partitions it consumes.
	PartitionsOwned *prometheus.GaugeVec
	ProcessSeconds  prometheus.Histogram
	// ConsumerPending is, per durable consumer, messages not yet delivered;
	// ConsumerAckPending those delivered and not yet acked. A consumer whose
	// ack-pending sits at its MaxAckPending has stalled.
	ConsumerPending    *prometheus.GaugeVec
	ConsumerAckPending *prometheus.GaugeVec
	DeadLetters        *prometheus.CounterVec
	AgentsOnline       prometheus.Gauge
	AgentsKnown        prometheus.Gauge
	// ReportsRefused counts reports dropped unapplied, by reason (see verify).
	ReportsRefused *prometheus.CounterVec
}

// NewMetrics registers the worker metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		JobsCreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetjob_jobs_created_total", Help: "Jobs created by workers."}),
		JobsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetjob_jobs_finished_total", Help: "Jobs finished, by final status."}, []string{"status"}),
		HostsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetjob_hosts_finished_total", Help: "Host executions finished, by status."}, []string{"status"}),
		TasksDispatched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetjob_tasks_dispatched_total", Help: "Tasks published to agents."}),
		CASConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetjob_state_cas_conflicts_total", Help: "Job state commits that lost a race and were recomputed."}),
		Kicks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetjob_sweeper_kicks_total", Help: "Jobs the sweeper sent back to workers for a deadline or a newly online agent."}),
		KicksHeld: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetjob_sweeper_kicks_held_total",
			Help: "Sweeps that did not kick a job again because its previous kick was in flight (its state had not moved).",
		}),
		ProcessSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fleetjob_worker_process_seconds", Help: "Time to apply a batch of reports to one job and commit it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	m.ConsumerPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fleetjob_consumer_pending", Help: "Messages not yet delivered, per durable consumer."}, []string{"stream", "consumer"})
	m.ConsumerAckPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fleetjob_consumer_ack_pending", Help: "Messages delivered and not yet acked, per durable consumer."}, []string{"stream", "consumer"})
	m.AgentsOnline = prometheus.NewGauge(prometheus.GaugeOpts{Name: "fleetjob_agents_online", Help: "Agents heard from within the heartbeat TTL."})
	m.AgentsKnown = prometheus.NewGauge(prometheus.GaugeOpts{Name: "fleetjob_agents_registered", Help: "Agents in the registry."})
	m.DeadLetters = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fleetjob_dead_letters_total", Help: "Messages that failed for good and were recorded as dead letters."}, []string{"stream"})
	m.PartitionsOwned = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fleetjob_result_partitions_owned", Help: "Result partitions a worker consumes."}, []string{"worker"})
	m.FirstCommits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fleetjob_first_commits_held_total",
		Help: "Small jobs' first commits held for their first reports, by how they were written: with_reports, forwarded (with reports another worker process forwarded), window_ended, for_command (a stop or operation), at_shutdown.",
	}, []string{"written"})
	m.EarlyReports = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fleetjob_reports_before_first_commit_total",
		Help: "Reports (and stops or operations) delivered again because their job's first commit was not written yet (held by another process that could not take them, or its submit not yet taken).",
	})
	m.ForwardedReports = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fleetjob_reports_forwarded_total",
		Help: "Reports forwarded to the held first commit of a job whose submit another worker process took, and committed there.",
	})
	m.ReportsRefused = newRefusedCounter()
	reg.MustRegister(m.ReportsRefused, m.FirstCommits, m.EarlyReports, m.ForwardedReports)
	reg.MustRegister(m.PartitionsOwned, m.ConsumerPending, m.ConsumerAckPending, m.AgentsOnline, m.AgentsKnown, m.DeadLetters)
	reg.MustRegister(m.JobsCreated, m.JobsFinished, m.HostsFinished, m.TasksDispatched, m.CASConflicts, m.Kicks, m.KicksHeld, m.ProcessSeconds)
	return m
}

// Observe samples consumer lag and the agent registry every period until
// ctx ends. One goroutine per worker process runs it.
func (m *Metrics) Observe(ctx context.Context, js jetstream.JetStream, agents func() []schemas.AgentInfo, ttl, period time.Duration) error {
	tick := time.NewTicker(period)
	defer tick.Stop()
	consumers := [][2]string{
		{schemas.StreamJobs, schemas.ConsumerCommands},
		{schemas.StreamResults, schemas.ConsumerResults},
		{schemas.StreamLogs, schemas.ConsumerIndexer},
	}
	if st, err := js.Stream(ctx, schemas.StreamResults); err == nil {
		if n := schemas.ResultPartitionsOf(st.CachedInfo().Config); n > 0 {
			consumers[1] = [2]string{}
			for k := range n {
				consumers = append(consumers, [2]string{schemas.StreamResults, schemas.PartitionConsumerName(k)})
			}
		}
	}
	for {
		for _, c := range consumers {
			if c[0] == "" {
				continue
			}
			cons, err := js.Consumer(ctx, c[0], c[1])
			if err != nil {
				continue
			}
			if info, err := cons.Info(ctx); err == nil {
				m.ConsumerPending.WithLabelValues(c[0], c[1]).Set(float64(info.NumPending))
				m.ConsumerAckPending.WithLabelValues(c[0], c[1]).Set(float64(info.NumAckPending))
			}
		}
		all := agents()
		online, now := 0, time.Now()
		for _, a := range all {
			if a.Online(now, ttl) {
				online++
			}
		}
		m.AgentsOnline.Set(float64(online))
		m.AgentsKnown.Set(float64(len(all)))
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
