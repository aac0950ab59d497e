package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
)

const sweeperLease = "sweeper"

// sweep runs the deadline sweeper whenever this worker holds the sweeper
// lease (a key in a TTL bucket, renewed by compare-and-set). Only one worker
// sweeps at a time; if it dies, the key ages out and another takes over.
func (w *Worker) sweep(ctx context.Context) error {
	tick := time.NewTicker(w.cfg.SweepEvery)
	defer tick.Stop()
	var rev uint64
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
			continue
		}
		if err := w.sweepOnce(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("sweep", "err", err)
		}
	}
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

// sweepOnce looks at every active job and kicks those where a deadline has
// passed, an agent came online, or a stop needs its kills resent.
func (w *Worker) sweepOnce(ctx context.Context) error {
	lister, err := w.active.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("list active jobs: %w", err)
	}
	now := time.Now().UTC()
	for key := range lister.Keys() {
		id, err := strconv.ParseInt(key, 10, 64)
		if err != nil {
			continue
		}
		st, _, err := w.loadState(ctx, id)
		if errors.Is(err, schemas.ErrNotFound) {
			continue // the submit command has not been taken yet
		}
		if err != nil {
			return err
		}
		if schemas.JobFinal(st.Status) {
			_ = w.active.Delete(ctx, key)
			continue
		}
		spec, err := w.spec(ctx, id)
		if err != nil {
			return err
		}
		t := newTxn(spec, st, now, w.dir)
		t.advance()
		if !t.changed && len(t.kills) == 0 {
			continue
		}
		if err := w.kick(id, now); err != nil {
			return err
		}
	}
	return nil
}

func (w *Worker) kick(id int64, now time.Time) error {
	b, _ := json.Marshal(schemas.Report{V: schemas.MessageVersion, Kind: schemas.ReportKick, JobID: id})
	m := nats.NewMsg(schemas.ResultSubject(id))
	m.Data = b
	m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("kick.%d.%d", id, now.Unix()))
	if _, err := w.js.PublishMsgAsync(m); err != nil {
		return fmt.Errorf("kick job %d: %w", id, err)
	}
	w.m.Kicks.Inc()
	return nil
}
