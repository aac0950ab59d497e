package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/pubflow"
	"github.com/fleetjob/fleetjob/schemas"
)

const sweeperLease = "sweeper"

// sweep runs the deadline sweeper whenever this worker holds the sweeper
// lease (a key in a TTL bucket, renewed by compare-and-set). Only one worker
// sweeps at a time; if it dies, the key ages out and another takes over.
//
// The sweeper looks at every active job each period, so it must not ask
// NATS for each one each time: with thousands of jobs waiting for agents
// that alone kept a core busy. While it holds the lease it keeps a view of
// the active jobs' state records instead: a watch on the jobs bucket's
// state keys feeds it every write, the active index seeds it when the
// lease is taken and again every resyncEvery (a job the watch missed while
// NATS failed over is found there).
func (w *Worker) sweep(ctx context.Context) error {
	tick := time.NewTicker(w.cfg.SweepEvery)
	defer tick.Stop()
	var rev uint64
	var v *sweepView
	defer func() {
		if v != nil {
			v.stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			if rev != 0 {
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				_ = w.leases.Delete(dctx, sweeperLease, jetstream.LastRevision(rev))
				cancel()
			}
			return nil
		case <-tick.C:
		}
		rev = w.holdLease(ctx, rev)
		if rev == 0 {
			if v != nil { // another worker sweeps now
				v.stop()
				v = nil
			}
			continue
		}
		if v == nil || v.stale() {
			if v != nil {
				v.stop()
			}
			var err error
			if v, err = w.openView(ctx); err != nil {
				v = nil
				if ctx.Err() == nil {
					w.log.Warn("sweeper view", "err", err)
				}
				continue
			}
		}
		if err := w.sweepOnce(ctx, v); err != nil && ctx.Err() == nil {
			w.log.Warn("sweep", "err", err)
		}
	}
}

// resyncEvery is how often the sweeper's view is rebuilt from the active
// index.
const resyncEvery = time.Minute

// sweepView holds the latest state record of every active job, as the
// sweeper last saw it.
type sweepView struct {
	w       jetstream.KeyWatcher
	opened  time.Time
	done    chan struct{}
	mu      sync.Mutex
	records map[int64]viewRecord
	broken  bool // the watch ended: rebuild
	// kicked holds the jobs kicked and the state revision they were
	// kicked at; only the sweeping goroutine uses it.
	kicked map[int64]kickMark
}

// kickMark is a kick in flight: sent at, for the state at rev.
type kickMark struct {
	rev uint64
	at  time.Time
}

// kickAgain is how long a job whose state has not moved since its kick
// waits for another: the kick is in flight (a 20,000-host job takes
// seconds to expire its hosts), and kicking it every period would only
// queue more of the same work. A lost kick, or a stop whose kills must be
// resent, waits this long.
const kickAgain = 5 * time.Second

type viewRecord struct {
	raw    []byte
	rev    uint64
	listed bool // found through the active index (its entry may be stale)
}

// openView starts the watch first and then reads the active index, so a
// job written between the two is seen by one or the other.
func (w *Worker) openView(ctx context.Context) (*sweepView, error) {
	kw, err := w.jobs.Watch(ctx, "*", jetstream.UpdatesOnly())
	if err != nil {
		return nil, fmt.Errorf("watch job states: %w", err)
	}
	v := &sweepView{w: kw, opened: time.Now(), done: make(chan struct{}), records: map[int64]viewRecord{},
		kicked: map[int64]kickMark{}}
	go v.follow()
	lister, err := w.active.ListKeys(ctx)
	if err != nil {
		v.stop()
		return nil, fmt.Errorf("list active jobs: %w", err)
	}
	for key := range lister.Keys() {
		id, err := strconv.ParseInt(key, 10, 64)
		if err != nil {
			continue
		}
		e, err := w.jobs.Get(ctx, schemas.KeyJobState(id))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			// the submit command has not been taken yet: its create
			// comes through the watch
			continue
		}
		if err != nil {
			v.stop()
			return nil, fmt.Errorf("load job %d: %w", id, err)
		}
		v.put(id, e.Value(), e.Revision(), true)
	}
	return v, nil
}

// follow applies the watch's updates until it ends.
func (v *sweepView) follow() {
	defer close(v.done)
	for e := range v.w.Updates() {
		if e == nil {
			continue
		}
		id, err := strconv.ParseInt(e.Key(), 10, 64)
		if err != nil {
			continue
		}
		if e.Operation() != jetstream.KeyValuePut {
			v.mu.Lock()
			delete(v.records, id)
			v.mu.Unlock()
			continue
		}
		v.put(id, e.Value(), e.Revision(), false)
	}
	v.mu.Lock()
	v.broken = true
	v.mu.Unlock()
}

// put records a job's state record at rev, unless the view already holds
// that revision or a newer one.
func (v *sweepView) put(id int64, raw []byte, rev uint64, listed bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if old, ok := v.records[id]; ok && old.rev >= rev {
		return
	}
	v.records[id] = viewRecord{raw: raw, rev: rev, listed: listed}
}

// drop forgets a job whose record at rev was final, unless a newer one came.
func (v *sweepView) drop(id int64, rev uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if r, ok := v.records[id]; ok && r.rev == rev {
		delete(v.records, id)
	}
}

func (v *sweepView) snapshot() map[int64]viewRecord {
	v.mu.Lock()
	defer v.mu.Unlock()
	return maps.Clone(v.records)
}

func (v *sweepView) stale() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.broken || time.Since(v.opened) > resyncEvery
}

func (v *sweepView) stop() {
	_ = v.w.Stop()
	<-v.done
}

// holdLease takes or renews the lease; it returns the lease revision, or 0
// when another worker holds it.
func (w *Worker) holdLease(ctx context.Context, rev uint64) uint64 {
	var err error
	if rev == 0 {
		rev, err = w.leases.Create(ctx, sweeperLease, []byte(w.cfg.Name))
	} else {
		rev, err = w.leases.Update(ctx, sweeperLease, []byte(w.cfg.Name), rev)
	}
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && ctx.Err() == nil {
			w.log.Warn("sweeper lease", "err", err)
		}
		return 0
	}
	return rev
}

// sweepOnce looks at every active job of the view and kicks those where a
// deadline has passed, an agent came online, or a stop needs its kills
// resent.
func (w *Worker) sweepOnce(ctx context.Context, v *sweepView) error {
	now := time.Now().UTC()
	win := pubflow.New(w.js, pubflow.DefaultSize)
	records := v.snapshot()
	for id := range v.kicked {
		if _, ok := records[id]; !ok {
			delete(v.kicked, id)
		}
	}
	for id, rec := range records {
		if k, ok := v.kicked[id]; ok && k.rev == rec.rev && now.Sub(k.at) < kickAgain {
			w.m.KicksHeld.Inc()
			continue // its kick is in flight: nothing moved since
		}
		var st schemas.JobState
		if err := json.Unmarshal(rec.raw, &st); err != nil {
			w.log.Warn("sweeper: undecodable job state", "job", id, "err", err)
			v.drop(id, rec.rev)
			continue
		}
		if schemas.JobFinal(st.Status) {
			v.drop(id, rec.rev)
			if rec.listed { // an index entry its worker failed to delete
				_ = w.active.Delete(ctx, strconv.FormatInt(id, 10))
			}
			continue
		}
		spec, err := w.spec(ctx, id)
		if err != nil {
			return err
		}
		t := newTxn(spec, &st, now, w.dir)
		t.advance()
		if !t.changed && len(t.kills) == 0 {
			continue
		}
		if err := w.kick(ctx, win, id, now); err != nil {
			return err
		}
		v.kicked[id] = kickMark{rev: rec.rev, at: now}
	}
	return win.Wait(ctx)
}

func (w *Worker) kick(ctx context.Context, win *pubflow.Window, id int64, now time.Time) error {
	b, _ := json.Marshal(schemas.Report{V: schemas.MessageVersion, Kind: schemas.ReportKick, JobID: id})
	m := nats.NewMsg(schemas.SweeperResultSubject(id))
	m.Data = b
	m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("kick.%d.%d", id, now.Unix()))
	if err := win.Publish(ctx, m); err != nil {
		return fmt.Errorf("kick job %d: %w", id, err)
	}
	w.m.Kicks.Inc()
	return nil
}
