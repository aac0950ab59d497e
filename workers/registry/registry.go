// Package registry keeps an in-memory view of the agents bucket: which agent
// serves which host, and whether it is online.
package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
)

// Registry watches the agents bucket.
type Registry struct {
	kv  jetstream.KeyValue
	ttl time.Duration

	mu     sync.RWMutex
	agents map[string]schemas.AgentInfo
	byHost map[schemas.Host][]string
	ready  chan struct{}
}

// New returns a registry; an agent counts as online when it was heard from
// within ttl.
func New(kv jetstream.KeyValue, ttl time.Duration) *Registry {
	return &Registry{
		kv: kv, ttl: ttl,
		agents: map[string]schemas.AgentInfo{},
		byHost: map[schemas.Host][]string{},
		ready:  make(chan struct{}),
	}
}

// TTL is how long an agent stays online without a heartbeat.
func (r *Registry) TTL() time.Duration { return r.ttl }

// Run follows the bucket until ctx ends.
func (r *Registry) Run(ctx context.Context) error {
	w, err := r.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch agents: %w", err)
	}
	defer w.Stop()
	readyOnce := sync.OnceFunc(func() { close(r.ready) })
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil { // initial values delivered
				readyOnce()
				continue
			}
			r.apply(e)
		}
	}
}

// Ready is closed once the initial contents have been loaded.
func (r *Registry) Ready() <-chan struct{} { return r.ready }

func (r *Registry) apply(e jetstream.KeyValueEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := e.Key()
	if old, ok := r.agents[id]; ok {
		r.unindex(old)
		delete(r.agents, id)
	}
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	var a schemas.AgentInfo
	if json.Unmarshal(e.Value(), &a) != nil {
		return
	}
	r.agents[id] = a
	r.byHost[a.Host()] = append(r.byHost[a.Host()], id)
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
