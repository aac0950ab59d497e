package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
// the active jobs' state records instead, fed by every write to the jobs
// bucket's state keys (see sweepView).
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
		w.bookmark(ctx, v)
	}
}

// sweepView holds the latest state record of every active job, as the
// sweeper last saw it.
//
// No index of active jobs is written: the view is derived from the jobs
// bucket itself. Its stream keeps one message per key (history 1), so an
// ordered consumer of the state keys ($KV.jobs.<id>) from sequence L
// delivers the latest record of every job written since L, and then every
// write as it happens, gap-free (an ordered consumer recreates itself
// where it left off after a reconnect). L is the view's low-water mark:
// the oldest revision among the jobs not yet final, or the next sequence
// when there are none. No active job's latest record can lie below it, so
// a sweeper that starts from it misses none; it is kept in the sweep
// bucket (at most one write per bookmarkEvery, and only when it moved) so
// that a new lease holder does not read every job ever kept. Records of
// final jobs are dropped as they are read, so memory holds active jobs
// only.
type sweepView struct {
	cc      jetstream.ConsumeContext
	done    chan struct{}
	mu      sync.Mutex
	records map[int64]viewRecord
	// fresh holds the state records of the jobs not looked at since their
	// last change; a job left alone keeps only its viewRecord.
	fresh   map[int64][]byte
	next    uint64 // the stream sequence after the last one read
	saved   uint64 // the low-water mark last stored
	savedAt time.Time
	broken  bool // the consumer ended: rebuild
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

// bookmarkEvery bounds how often the low-water mark is stored.
const bookmarkEvery = 5 * time.Second

// viewRecord is an active job's latest state record: its revision, and
// once the sweeper has looked at it and left it alone, until when (its
// record, in fresh until then, is read again from the bucket when the job
// is due, so a job waiting long costs the view one map entry of 40 bytes).
type viewRecord struct {
	rev  uint64
	mark sweepMark // zero: not looked at since its last change
}

// openView reads the stored low-water mark and follows the jobs bucket's
// state keys from there.
func (w *Worker) openView(ctx context.Context) (*sweepView, error) {
	from := uint64(1)
	e, err := w.sweepKV.Get(ctx, schemas.KeySweepFrom)
	switch {
	case err == nil:
		if n, perr := strconv.ParseUint(string(e.Value()), 10, 64); perr == nil && n > 0 {
			from = n
		}
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, fmt.Errorf("read the sweeper's bookmark: %w", err)
	}
	cons, err := w.js.OrderedConsumer(ctx, "KV_"+schemas.BucketJobs, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{schemas.KVSubject(schemas.BucketJobs, "*")},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy, OptStartSeq: from,
	})
	if err != nil {
		return nil, fmt.Errorf("follow job states: %w", err)
	}
	v := &sweepView{done: make(chan struct{}), records: map[int64]viewRecord{}, fresh: map[int64][]byte{}, next: from,
		saved: from, savedAt: time.Now(), kicked: map[int64]kickMark{}}
	if v.cc, err = cons.Consume(v.apply); err != nil {
		return nil, fmt.Errorf("follow job states: %w", err)
	}
	go func() {
		<-v.cc.Closed()
		v.mu.Lock()
		v.broken = true
		v.mu.Unlock()
		close(v.done)
	}()
	return v, nil
}

// apply takes one state record (or its deletion) into the view.
func (v *sweepView) apply(m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		return
	}
	seq := meta.Sequence.Stream
	id, err := strconv.ParseInt(strings.TrimPrefix(m.Subject(), schemas.KVSubject(schemas.BucketJobs, "")), 10, 64)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.next = max(v.next, seq+1)
	if err != nil {
		return
	}
	if op := m.Headers().Get(kvOperationHdr); op != "" || final(m.Data()) {
		delete(v.records, id)
		delete(v.fresh, id)
		return
	}
	if old, ok := v.records[id]; ok && old.rev >= seq {
		return
	}
	v.records[id] = viewRecord{rev: seq}
	v.fresh[id] = m.Data()
}

// kvOperationHdr marks a KV delete or purge.
const kvOperationHdr = "KV-Operation"

// final peeks at a state record's status without decoding the rest. A
// record as JobState marshals it starts {"v":N,"id":N,"status":"...": its
// first "status" is the job's, read without decoding the record (every
// record of every job passes here); any other is decoded.
func final(raw []byte) bool {
	if rest, ok := bytes.CutPrefix(raw, []byte(`{"v":`)); ok {
		if i := bytes.Index(rest, []byte(`"status":"`)); i >= 0 && !bytes.ContainsAny(rest[:i], "{[") {
			rest = rest[i+len(`"status":"`):]
			if j := bytes.IndexByte(rest, '"'); j >= 0 {
				return schemas.JobFinal(string(rest[:j]))
			}
		}
	}
	var st struct {
		Status string `json:"status"`
	}
	return json.Unmarshal(raw, &st) == nil && schemas.JobFinal(st.Status)
}

// lowWater is where a new view must start so that it misses no job that is
// not final: the oldest revision held, or the next sequence.
func (v *sweepView) lowWater() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	l := v.next
	for _, r := range v.records {
		l = min(l, r.rev)
	}
	return l
}

// bookmark stores the low-water mark when it moved, at most every
// bookmarkEvery.
func (w *Worker) bookmark(ctx context.Context, v *sweepView) {
	if time.Since(v.savedAt) < bookmarkEvery {
		return
	}
	l := v.lowWater()
	if l == v.saved {
		return
	}
	if _, err := w.sweepKV.Put(ctx, schemas.KeySweepFrom, []byte(strconv.FormatUint(l, 10))); err != nil {
		w.log.Warn("store the sweeper's bookmark", "err", err)
		return
	}
	v.saved, v.savedAt = l, time.Now()
}

// drop forgets a job whose record at rev was final, unless a newer one came.
func (v *sweepView) drop(id int64, rev uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if r, ok := v.records[id]; ok && r.rev == rev {
		delete(v.records, id)
		delete(v.fresh, id)
	}
}

// sweepCandidate is a job the sweep must look at, with its state record
// when the view holds it (nil: read it from the bucket).
type sweepCandidate struct {
	id  int64
	rev uint64
	raw []byte
}

// due lists the jobs to look at now: those not looked at since their last
// change, and those whose mark has run out (sweepdue.go); it forgets the
// kicks of jobs no longer active, and skips jobs whose kick is in flight.
func (v *sweepView) due(now time.Time, arrivals uint64, counted bool, keep time.Duration, held func()) []sweepCandidate {
	v.mu.Lock()
	defer v.mu.Unlock()
	for id := range v.kicked {
		if _, ok := v.records[id]; !ok {
			delete(v.kicked, id)
		}
	}
	var out []sweepCandidate
	for id, rec := range v.records {
		if k, ok := v.kicked[id]; ok && k.rev == rec.rev && now.Sub(k.at) < kickAgain {
			held()
			continue // its kick is in flight: nothing moved since
		}
		if c := rec.mark; c.set() && counted && c.arrivals == arrivals && now.UnixNano() < c.due &&
			(keep <= 0 || now.UnixNano()-c.created <= int64(keep-schemas.RetentionMargin)) {
			continue // nothing can have moved it since it was looked at
		}
		out = append(out, sweepCandidate{id: id, rev: rec.rev, raw: v.fresh[id]})
	}
	return out
}

// leave marks a job looked at and left alone, unless its record changed
// meanwhile, and lets go of its state record.
func (v *sweepView) leave(id int64, rev uint64, m sweepMark) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if r, ok := v.records[id]; ok && r.rev == rev {
		v.records[id] = viewRecord{rev: rev, mark: m}
		delete(v.fresh, id)
	}
}

func (v *sweepView) stale() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.broken
}

func (v *sweepView) stop() {
	v.cc.Stop()
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
	// read before the jobs are: an agent arriving meanwhile is seen by
	// the next sweep
	arrivals, counted := w.arrivals()
	keep := w.cfg.Topology.JobRetention
	for _, c := range v.due(now, arrivals, counted, keep, w.m.KicksHeld.Inc) {
		id, rev, raw := c.id, c.rev, c.raw
		if raw == nil {
			e, err := w.jobs.Get(ctx, schemas.KeyJobState(id))
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				v.drop(id, rev)
				continue
			}
			if err != nil {
				return fmt.Errorf("sweeper: read job %d: %w", id, err)
			}
			raw = e.Value()
			if e.Revision() != rev {
				continue // a newer record is on its way to the view
			}
		}
		var st schemas.JobState
		if err := json.Unmarshal(raw, &st); err != nil {
			w.log.Warn("sweeper: undecodable job state", "job", id, "err", err)
			v.drop(id, rev)
			continue
		}
		if keep > 0 && now.Sub(st.CreatedAt) > keep-schemas.RetentionMargin {
			// its spec and state would soon age out of JetStream under it
			if err := w.failJob(ctx, id, nil, fmt.Sprintf("the job did not end within its retention (%s less %s)", keep, schemas.RetentionMargin)); err != nil {
				return err
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
			v.leave(id, rev, newSweepMark(arrivals, dueAt(spec, &st, now), st.CreatedAt))
			continue
		}
		if err := w.kick(ctx, win, id, now); err != nil {
			return err
		}
		v.kicked[id] = kickMark{rev: rev, at: now}
	}
	return win.Wait(ctx)
}

func (w *Worker) kick(ctx context.Context, win *pubflow.Window, id int64, now time.Time) error {
	b, _ := json.Marshal(schemas.Report{V: schemas.MessageVersion, Kind: schemas.ReportKick, JobID: id})
	subj := schemas.SweeperResultSubject(id)
	if w.partitions > 0 {
		subj = schemas.PartitionedSweeperResultSubject(id, w.partitions)
	}
	m := nats.NewMsg(subj)
	m.Data = b
	m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("kick.%d.%d", id, now.Unix()))
	if err := win.Publish(ctx, m); err != nil {
		return fmt.Errorf("kick job %d: %w", id, err)
	}
	w.m.Kicks.Inc()
	return nil
}
