package orchestrator

// This file holds partitioned consumption of reports: each partition of a
// partitioned RESULTS stream (schemas.ResultPartition) is consumed by one
// worker at a time, so one job's reports are folded by one worker — in
// batches, without compare-and-set races between workers and without a
// second worker replaying a commit whose events the first still has in
// flight — and more workers take more partitions.
//
// Ownership is leases in the leases bucket (TTL, renewed by
// compare-and-set): every worker heartbeats member.<name>; each computes
// from the members it sees which partitions are its own (rendezvous
// hashing: partition k goes to the member with the highest hash of k and
// its name, so a member joining or leaving moves only its share); it
// takes part.<k> for each of its own that is free, consumes while it holds
// it, and gives back (stops consuming, waits for the batches it started,
// then deletes the lease) those that are no longer its own. A worker that
// dies leaves its leases to expire (topology.LeaseTTL); a worker that
// stalls past its lease loses it at its next renewal and stops. Two
// workers on one partition for a moment would still be correct (the job
// state is compare-and-set): the leases make it rare, not impossible.

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/pull"
)

// partitionEvery is how often a worker heartbeats, looks at the members
// and renews its partitions' leases.
const partitionEvery = time.Second

// partitionBatch bounds a batch of one partition's reports.
const partitionBatch = 512

// memberKeyPrefix starts the leases bucket's keys of live workers.
const memberKeyPrefix = "member."

// owned is a partition this worker consumes.
type owned struct {
	rev    uint64 // its lease's revision
	cancel context.CancelFunc
	done   chan struct{} // closed once consumption stopped and its batches ended
}

// consumePartitions consumes the partitions of n that are this worker's,
// following membership changes, until ctx ends; then it gives every one
// back.
func (w *Worker) consumePartitions(ctx context.Context, n int) error {
	own := map[int]*owned{}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for k, o := range own {
			w.givePartition(dctx, k, o)
		}
		_ = w.leases.Delete(dctx, memberKeyPrefix+w.member())
	}()
	tick := time.NewTicker(partitionEvery)
	defer tick.Stop()
	// Say it is here and give the workers starting with it a moment to
	// say so too before taking anything: a partition taken and given
	// back at once hands its fetched reports back, and each comes again
	// as a redelivery, which replays its commit.
	if _, err := w.leases.Put(ctx, memberKeyPrefix+w.member(), nil); err != nil && ctx.Err() == nil {
		w.log.Warn("result partitions: heartbeat", "err", err)
	}
	select {
	case <-ctx.Done():
		return nil
	case <-tick.C:
	}
	for {
		if err := w.balance(ctx, n, own); err != nil && ctx.Err() == nil {
			w.log.Warn("result partitions", "err", err)
		}
		w.m.PartitionsOwned.WithLabelValues(w.cfg.Name).Set(float64(len(own)))
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// balance is one round: heartbeat, renew, give back, take.
func (w *Worker) balance(ctx context.Context, n int, own map[int]*owned) error {
	if _, err := w.leases.Put(ctx, memberKeyPrefix+w.member(), nil); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	members, err := w.members(ctx)
	if err != nil {
		return err
	}
	for k, o := range own {
		if mine(k, w.member(), members) {
			rev, err := w.leases.Update(ctx, partitionKey(k), []byte(w.cfg.Name), o.rev)
			if err == nil {
				o.rev = rev
				continue
			}
			w.log.Warn("partition lease lost: stopping", "partition", k, "err", err)
		}
		w.givePartition(ctx, k, o)
		delete(own, k)
	}
	for k := range n {
		if _, ok := own[k]; ok || !mine(k, w.member(), members) {
			continue
		}
		rev, err := w.leases.Create(ctx, partitionKey(k), []byte(w.cfg.Name))
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue // its last owner has not given it back yet
		}
		if err != nil {
			return fmt.Errorf("take partition %d: %w", k, err)
		}
		o, err := w.takePartition(ctx, k, rev)
		if err != nil {
			_ = w.leases.Delete(ctx, partitionKey(k), jetstream.LastRevision(rev))
			return err
		}
		own[k] = o
	}
	return nil
}

// members lists the workers heard from within the lease TTL, this one
// included.
func (w *Worker) members(ctx context.Context) ([]string, error) {
	lister, err := w.leases.ListKeysFiltered(ctx, memberKeyPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	out := []string{w.member()}
	for key := range lister.Keys() {
		if name := strings.TrimPrefix(key, memberKeyPrefix); name != w.member() {
			out = append(out, name)
		}
	}
	return out, nil
}

// mine reports whether partition k is name's among members.
func mine(k int, name string, members []string) bool { return PartitionOwner(k, members) == name }

// PartitionOwner is the member that partition k belongs to: the one with
// the highest hash of (k, member).
func PartitionOwner(k int, members []string) string {
	best, top := "", uint64(0)
	for _, m := range members {
		h := fnv.New64a()
		_, _ = h.Write([]byte(strconv.Itoa(k) + "/" + m))
		if s := h.Sum64(); best == "" || s > top || (s == top && m < best) {
			best, top = m, s
		}
	}
	return best
}

// member is the worker's name as one key token.
func (w *Worker) member() string { return MemberName(w.cfg.Name) }

// MemberName is a worker's name as one key token (its member.<name> key).
func MemberName(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '*' || r == '>' || r == ' ' {
			return '_'
		}
		return r
	}, name)
}

func partitionKey(k int) string { return schemas.PartitionLeaseKey(k) }

// takePartition starts consuming partition k.
func (w *Worker) takePartition(ctx context.Context, k int, rev uint64) (*owned, error) {
	cons, err := w.js.CreateOrUpdateConsumer(ctx, schemas.StreamResults, w.cfg.Topology.PartitionConsumer(k))
	if err != nil {
		return nil, fmt.Errorf("partition %d consumer: %w", k, err)
	}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	o := &owned{rev: rev, cancel: cancel, done: make(chan struct{})}
	var started sync.WaitGroup // the batches this partition handed to the pool
	go func() {
		defer close(o.done)
		if err := pull.Batches(pctx, cons, partitionBatch, func(batch []jetstream.Msg) { w.reportBatch(batch, &started) }); err != nil {
			w.log.Warn("consume partition", "partition", k, "err", err)
		}
		started.Wait()
	}()
	w.creations.consuming(k, 1)
	w.log.Debug("partition taken", "partition", k)
	return o, nil
}

// givePartition stops consuming partition k, waits for the batches it
// started, and frees its lease for the next owner.
func (w *Worker) givePartition(ctx context.Context, k int, o *owned) {
	w.creations.consuming(k, -1)
	o.cancel()
	<-o.done
	if err := w.leases.Delete(ctx, partitionKey(k), jetstream.LastRevision(o.rev)); err != nil && ctx.Err() == nil {
		w.log.Debug("partition lease not deleted (it expires)", "partition", k, "err", err)
	}
	w.log.Debug("partition given back", "partition", k)
}
