package api

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
)

// WatchedNames is Claims whose task-name claims (strict claims: names a
// surface keeps for good) are answered from memory, so a named submission
// costs one JetStream round trip, its publish, instead of three (look the
// name up, publish, record the claim):
//   - a name claimed earlier is found in memory, kept current by a watch of
//     the names bucket's keys of those surfaces;
//   - a name claimed within the command stream's duplicate window by any API
//     process is caught by the publish itself: the submit carries the name
//     as its message id, and JetStream answers the first job's sequence as
//     a duplicate;
//   - the claim is then recorded in the bucket in the background, long
//     before that window ends.
//
// Idempotency keys and lookups by name (Resolve) still go to the bucket.
type WatchedNames struct {
	KVClaims
	js  jetstream.JetStream
	log *slog.Logger

	mu      sync.RWMutex
	held    map[string]int64
	pending sync.WaitGroup // records being written

	// records waiting for the writer, which writes them in batches
	qmu     sync.Mutex
	queue   []nameRecord
	writing bool
}

// nameRecord is a claim to write to the bucket.
type nameRecord struct {
	key string
	id  int64
}

// NewWatchedNames loads the names of surfaces from the bucket (kv, of js)
// and watches it until ctx ends.
func NewWatchedNames(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, surfaces []string, log *slog.Logger) (*WatchedNames, error) {
	n := &WatchedNames{KVClaims: KVClaims{KV: kv}, js: js, log: log.With("component", "names"), held: map[string]int64{}}
	patterns := make([]string, len(surfaces))
	for i, s := range surfaces {
		patterns[i] = s + ".*"
	}
	w, err := kv.WatchFiltered(ctx, patterns)
	if err != nil {
		return nil, fmt.Errorf("watch names: %w", err)
	}
	if err := follow(ctx, w, "names", n.apply); err != nil {
		return nil, err
	}
	return n, nil
}

func (n *WatchedNames) apply(e jetstream.KeyValueEntry) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(n.held, e.Key())
		return
	}
	idText, _, _ := strings.Cut(string(e.Value()), " ")
	if id, err := strconv.ParseInt(idText, 10, 64); err == nil {
		n.held[e.Key()] = id
	}
}

// Held answers from memory which job holds a name claim.
func (n *WatchedNames) Held(key string) (ClaimHolder, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	id, ok := n.held[key]
	return ClaimHolder{ID: id}, ok
}

// Record notes a name claim at once and writes it to the bucket in the
// background: one writer publishes the claims queued meanwhile together
// (created only if absent, as Claim does) and awaits their acks at once,
// so a burst of named submissions costs no round trip each. A claim the
// batch could not create is tried alone, a few times; one another job
// holds already (a race with another API process, outside the duplicate
// window) is logged.
func (n *WatchedNames) Record(key string, id int64) {
	n.mu.Lock()
	if _, ok := n.held[key]; !ok {
		n.held[key] = id
	}
	n.mu.Unlock()
	n.pending.Add(1)
	n.qmu.Lock()
	n.queue = append(n.queue, nameRecord{key, id})
	start := !n.writing
	n.writing = true
	n.qmu.Unlock()
	if start {
		go n.write()
	}
}

// recordBatch bounds the claims one batch publishes before awaiting them.
const recordBatch = 256

// write writes queued claims until none is left.
func (n *WatchedNames) write() {
	for {
		n.qmu.Lock()
		batch := n.queue[:min(len(n.queue), recordBatch)]
		n.queue = n.queue[len(batch):]
		if len(batch) == 0 {
			n.queue, n.writing = nil, false
			n.qmu.Unlock()
			return
		}
		n.qmu.Unlock()
		futs := make([]jetstream.PubAckFuture, len(batch))
		for i, r := range batch {
			m := nats.NewMsg(schemas.KVSubject(schemas.BucketNames, r.key))
			m.Data = []byte(strconv.FormatInt(r.id, 10))
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0") // created only if absent
			futs[i], _ = n.js.PublishMsgAsync(m)
		}
		ctx, cancel := context.WithTimeout(context.Background(), schemas.PublishAsyncTimeout)
		for i, f := range futs {
			ok := false
			if f != nil {
				select {
				case <-f.Ok():
					ok = true
				case <-f.Err():
				case <-ctx.Done():
				}
			}
			if ok {
				n.pending.Done()
			} else {
				go n.recordAlone(batch[i])
			}
		}
		cancel()
	}
}

// recordAlone writes one claim the batch did not: the name may be held
// already (by this job: a retried batch; by another: logged), or the
// bucket may not have answered.
func (n *WatchedNames) recordAlone(r nameRecord) {
	defer n.pending.Done()
	for attempt, wait := 0, 100*time.Millisecond; attempt < 5; attempt, wait = attempt+1, 2*wait {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h, err := n.Claim(ctx, r.key, r.id, "")
		cancel()
		if err == nil {
			if h.ID != r.id {
				n.log.Error("a task name is held by two jobs", "key", r.key, "job", r.id, "holder", h.ID)
			}
			return
		}
		n.log.Warn("record a task name; retrying", "key", r.key, "job", r.id, "attempt", attempt+1, "err", err)
		time.Sleep(wait)
	}
	n.log.Error("task name not recorded: another API process may accept it again once the duplicate window has passed", "key", r.key, "job", r.id)
}

// Wait waits (until ctx ends) for the claims being recorded: an API
// process shutting down records what it accepted first.
func (n *WatchedNames) Wait(ctx context.Context) {
	done := make(chan struct{})
	go func() { n.pending.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		n.log.Error("task names not recorded before shutdown", "err", ctx.Err())
	}
}

// nameIndex is what Submit needs of Claims to take a name in one round
// trip (WatchedNames).
type nameIndex interface {
	Held(key string) (ClaimHolder, bool)
	Record(key string, id int64)
}

// follow applies a bucket watch's initial values (waiting for them at most
// 30 s), then its updates in the background until ctx ends; what names
// the bucket in errors.
func follow(ctx context.Context, w jetstream.KeyWatcher, what string, apply func(jetstream.KeyValueEntry)) error {
	load, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for loaded := false; !loaded; {
		select {
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return schemas.Unavailable(nil, "the %s watch ended while loading", what)
			case e == nil:
				loaded = true // the initial values are in
			default:
				apply(e)
			}
		case <-load.Done():
			_ = w.Stop()
			return schemas.Unavailable(load.Err(), "load %s", what)
		}
	}
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					apply(e)
				}
			}
		}
	}()
	return nil
}
