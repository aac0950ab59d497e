package orchestrator

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the workers' Prometheus collectors.
type Metrics struct {
	JobsCreated     prometheus.Counter
	JobsFinished    *prometheus.CounterVec
	HostsFinished   *prometheus.CounterVec
	TasksDispatched prometheus.Counter
	CASConflicts    prometheus.Counter
	Kicks           prometheus.Counter
	ProcessSeconds  prometheus.Histogram
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
		ProcessSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fleetjob_worker_process_seconds", Help: "Time to apply a batch of reports to one job and commit it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	reg.MustRegister(m.JobsCreated, m.JobsFinished, m.HostsFinished, m.TasksDispatched, m.CASConflicts, m.Kicks, m.ProcessSeconds)
	return m
}
