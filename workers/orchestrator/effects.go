package orchestrator

// This file holds what follows a commit: publish tasks and events, update
// the status cache, purge a stopped job's tasks, ask agents to kill, and
// unindex a finished job.

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/pubflow"
	"github.com/fleetjob/fleetjob/schemas"
)

// effects runs after a commit: tasks, events, cache, stop side effects.
func (w *Worker) effects(ctx context.Context, spec *schemas.JobSpec, st *schemas.JobState, rev uint64, t *txn) error {
	// tasks and events go out through one window: thousands of them wait
	// for acks in turn instead of stalling the connection's publisher
	win := pubflow.New(w.js, pubflow.DefaultSize)
	if err := w.publishTasks(ctx, win, st.ID, t.tasks); err != nil {
		return err
	}
	// The cache is written before the events go out, so whoever reacts to
	// an event reads a state at least as new as the event.
	switch {
	case t.created:
		if err := w.cache.Created(ctx, spec, st, rev, t.createdRows()); err != nil {
			w.log.Warn("cache new job", "job", st.ID, "err", err)
		}
	case t.changed || len(t.touched) > 0:
		if err := w.cache.Update(ctx, spec, st, rev, t.rows()); err != nil {
			w.log.Warn("cache update", "job", st.ID, "err", err)
		}
	}
	evs, err := w.unpublished(ctx, t)
	if err != nil {
		return err
	}
	if err := w.pub.Queue(ctx, win, evs...); err != nil {
		return err
	}
	if err := win.Wait(ctx); err != nil {
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
		w.specs.forget(st.ID)
		w.segs.forgetJob(st.ID)
	}
	return nil
}

// publishTasks queues tasks on a publish window, each under its execution
// id, so a task published again is dropped as a duplicate.
func (w *Worker) publishTasks(ctx context.Context, win *pubflow.Window, id int64, tasks []routedTask) error {
	for _, rt := range tasks {
		b, _ := json.Marshal(rt.task)
		m := nats.NewMsg(schemas.TaskSubject(rt.pool, rt.agent, id))
		m.Data = b
		m.Header.Set(nats.MsgIdHdr, rt.task.ExecID)
		if err := win.Publish(ctx, m); err != nil {
			return fmt.Errorf("publish task %s: %w", rt.task.ExecID, err)
		}
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
