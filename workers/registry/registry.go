// Package registry keeps an in-memory view of the agents bucket: which agent
// serves which host, and whether it is online.
package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/schemas"
)

// Registry watches the agents bucket.
//
// It also knows whether its own view is fresh. An agent's silence is only
// held against it while the registry can see heartbeats arrive: each
// registry writes a probe key into the bucket every probeEvery and watches
// it come back. When the watch stalls (a NATS failover, a reconnect) no
// agent is declared gone, and when it resumes every agent gets a full TTL
// from then to be heard again, as Nomad resets its heartbeat timers after
// a leader election. Without this, a worker whose watch stalled for a TTL
// marked the hosts of live agents interrupted.
//
// An agent's record is only its claim: the registry serves an agent for a
// host only when the agent's Enrolment (the enrolled bucket, which only
// the API writes) allows that host and is not revoked. Refused claims are
// counted and logged, and a revocation takes effect as soon as the watch
// delivers it.
type Registry struct {
	kv       jetstream.KeyValue
	enrolled jetstream.KeyValue
	ttl      time.Duration
	probe    string // this registry's probe key
	log      *slog.Logger
	refused  *prometheus.CounterVec

	mu sync.RWMutex
	// claims are every agent record as written; agents are the accepted
	// ones, indexed by host in byHost.
	claims     map[string]schemas.AgentInfo
	enrolments map[string]schemas.Enrolment
	refusing   map[string]string // agent id → why its claim is refused (logged once)
	agents     map[string]schemas.AgentInfo
	byHost     map[schemas.Host][]string
	ready      chan struct{}
	// heard is when the watch last delivered anything; resumed is when it
	// was first heard again after a stall (or when the registry started).
	heard, resumed time.Time
	// arrivals counts agents accepted that were not online a moment
	// before (new, back, admitted, or moved to another host or pool).
	arrivals atomic.Uint64
}

// Probe timing: a probe every probeEvery; a watch silent for stallAfter
// has stalled.
const (
	probeEvery = 2 * time.Second
	stallAfter = 3 * probeEvery
)

// probePrefix starts the probe keys, which agent ids cannot (they have no
// dots).
const probePrefix = "probe."

// New returns a registry of the agents bucket kv, judging claims by the
// enrolled bucket; an agent counts as online when it was heard from within
// ttl. log may be nil.
func New(kv, enrolled jetstream.KeyValue, ttl time.Duration, log *slog.Logger) *Registry {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	now := time.Now()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registry{
		kv: kv, enrolled: enrolled, ttl: ttl, probe: probePrefix + hex.EncodeToString(b),
		log:     log.With("component", "registry"),
		refused: newRefused(),
		claims:  map[string]schemas.AgentInfo{}, enrolments: map[string]schemas.Enrolment{},
		refusing: map[string]string{},
		agents:   map[string]schemas.AgentInfo{},
		byHost:   map[schemas.Host][]string{},
		ready:    make(chan struct{}),
		heard:    now, resumed: now,
	}
}

// TTL is how long an agent stays online without a heartbeat.
func (r *Registry) TTL() time.Duration { return r.ttl }

// Run follows the buckets, and writes the probe, until ctx ends. The
// enrolments are loaded before the first claim is judged.
func (r *Registry) Run(ctx context.Context) error {
	ew, err := r.enrolled.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch enrolments: %w", err)
	}
	defer ew.Stop()
	if err := r.loadEnrolments(ctx, ew); err != nil {
		return err
	}
	w, err := r.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch agents: %w", err)
	}
	defer w.Stop()
	go r.probeLoop(ctx)
	readyOnce := sync.OnceFunc(func() { close(r.ready) })
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-ew.Updates():
			if !ok {
				return nil
			}
			if e != nil {
				r.applyEnrolment(e)
			}
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil { // initial values delivered
				readyOnce()
				continue
			}
			r.apply(ctx, e, time.Now())
		}
	}
}

// probeLoop writes this registry's probe key every probeEvery, and deletes
// it when ctx ends.
func (r *Registry) probeLoop(ctx context.Context) {
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, probeEvery)
		_, _ = r.kv.Put(pctx, r.probe, []byte(time.Now().UTC().Format(time.RFC3339)))
		cancel()
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = r.kv.Delete(dctx, r.probe)
			cancel()
			return
		case <-tick.C:
		}
	}
}

// Ready is closed once the initial contents have been loaded.
func (r *Registry) Ready() <-chan struct{} { return r.ready }

func (r *Registry) apply(ctx context.Context, e jetstream.KeyValueEntry, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if at.Sub(r.heard) > stallAfter {
		r.resumed = at
	}
	r.heard = at
	id := e.Key()
	if strings.HasPrefix(id, probePrefix) {
		// another registry's probe left by a crash: not kept forever
		if id != r.probe && e.Operation() == jetstream.KeyValuePut && at.Sub(e.Created()) > 10*r.ttl {
			go func() { _ = r.kv.Delete(context.WithoutCancel(ctx), id, jetstream.LastRevision(e.Revision())) }()
		}
		return
	}
	prev, had := r.claims[id]
	delete(r.claims, id)
	if e.Operation() == jetstream.KeyValuePut {
		var a schemas.AgentInfo
		if json.Unmarshal(e.Value(), &a) == nil {
			if a.ID != id {
				a.ID = "" // a record under another agent's key is nobody's claim
			}
			if had {
				keepStrings(&a, prev)
			}
			r.claims[id] = a
		}
	}
	r.judge(id)
}

// keepStrings points a's names and labels at prev's where they are equal.
// Each heartbeat (every 5 s per agent) decodes the same names again: kept,
// the new copies die young, instead of surviving one heartbeat each
// scattered through the heap, where they keep half-empty memory spans in
// use (seen in a heap dump of serve with 1,000 agents).
func keepStrings(a *schemas.AgentInfo, prev schemas.AgentInfo) {
	for _, f := range [...]struct {
		to   *string
		from string
	}{
		{&a.ID, prev.ID}, {&a.IP, prev.IP}, {&a.Hostname, prev.Hostname}, {&a.Version, prev.Version}, {&a.Pool, prev.Pool},
	} {
		if *f.to == f.from {
			*f.to = f.from
		}
	}
	if maps.Equal(a.Labels, prev.Labels) && prev.Labels != nil {
		a.Labels = prev.Labels
	}
}

func (r *Registry) unindex(a schemas.AgentInfo) {
	ids := r.byHost[a.Host()]
	for i, x := range ids {
		if x == a.ID {
			ids = append(ids[:i], ids[i+1:]...)
			break
		}
	}
	if len(ids) == 0 {
		delete(r.byHost, a.Host())
	} else {
		r.byHost[a.Host()] = ids
	}
}

// Lookup returns the online agent that serves h (the most recently heard
// one when several do), and whether there is one.
func (r *Registry) Lookup(h schemas.Host, now time.Time) (schemas.AgentInfo, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var best schemas.AgentInfo
	found := false
	for _, id := range r.byHost[h] {
		a := r.agents[id]
		if a.Online(now, r.ttl) && (!found || a.LastSeen.After(best.LastSeen)) {
			best, found = a, true
		}
	}
	return best, found
}

// Gone reports whether the agents serving h are gone as far as a fresh
// view can tell: none was heard from within the TTL, counting from when
// the watch last resumed after a stall, and the watch is not stalled now.
// A stopping agent is gone at once.
func (r *Registry) Gone(h schemas.Host, now time.Time) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if now.Sub(r.heard) > stallAfter {
		return false // the view is stale: nobody can be told gone
	}
	for _, id := range r.byHost[h] {
		a := r.agents[id]
		if !a.Stopping && now.Sub(laterOf(a.LastSeen, r.resumed)) <= r.ttl {
			return false
		}
	}
	return true
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Arrivals counts agents coming online: a job waiting for agents needs
// another look only when it moved (see orchestrator's sweeper).
func (r *Registry) Arrivals() uint64 { return r.arrivals.Load() }

// Agent returns one agent by id.
func (r *Registry) Agent(id string) (schemas.AgentInfo, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a, ok := r.agents[id]
	return a, ok
}

// All returns every registered agent, sorted by id.
func (r *Registry) All() []schemas.AgentInfo {
	r.mu.RLock()
	out := make([]schemas.AgentInfo, 0, len(r.agents))
	for _, a := range r.agents {
		out = append(out, a)
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ByHostID returns the online agent whose host has the CMDB id hostID.
func (r *Registry) ByHostID(hostID int64, now time.Time) (schemas.AgentInfo, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var best schemas.AgentInfo
	found := false
	for _, a := range r.agents {
		if a.HostID == hostID && (!found || a.LastSeen.After(best.LastSeen)) {
			best, found = a, true
		}
	}
	return best, found
}
