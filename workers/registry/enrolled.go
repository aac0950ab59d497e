package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/schemas"
)

// Reasons a claim is refused, the label of the refused-claims counter.
const (
	refusedNotEnrolled = "not_enrolled"
	refusedRevoked     = "revoked"
	refusedHost        = "host_not_enrolled"
	refusedRecord      = "bad_record"
	// refusedHostID is a claimed CMDB host id the enrolment does not
	// list: the id is ignored, the agent still serves its host.
	refusedHostID = "host_id_not_enrolled"
)

func newRefused() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetjob_registry_claims_refused_total",
		Help: "Agent registry records refused because the agent's enrolment does not allow them, by reason."}, []string{"reason"})
}

// Register registers the refused-claims counter on reg; registries of one
// process share it.
func (r *Registry) Register(reg prometheus.Registerer) {
	if err := reg.Register(r.refused); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if c, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				r.refused = c
			}
		}
	}
}

// loadEnrolments applies the enrolled bucket's initial contents.
func (r *Registry) loadEnrolments(ctx context.Context, w jetstream.KeyWatcher) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("watch enrolments: closed")
			}
			if e == nil {
				return nil
			}
			r.applyEnrolment(e)
		}
	}
}

// applyEnrolment takes in an enrolment change and judges again the claims
// it rules: its agent's, or a simulator pool's identities.
func (r *Registry) applyEnrolment(e jetstream.KeyValueEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := e.Key()
	delete(r.enrolments, key)
	if e.Operation() == jetstream.KeyValuePut {
		var en schemas.Enrolment
		if json.Unmarshal(e.Value(), &en) == nil {
			r.enrolments[key] = en
		}
	}
	if _, ok := r.claims[key]; ok {
		r.judge(key)
	}
	for id, a := range r.claims {
		if pool, ok := schemas.SimulatedOf(a); ok && pool == key && id != key {
			r.judge(id)
		}
	}
}

// judge indexes agent id's claim if its enrolment allows it and drops it
// otherwise. r.mu is held.
func (r *Registry) judge(id string) {
	old, had := r.agents[id]
	if had {
		r.unindex(old)
		delete(r.agents, id)
	}
	a, ok := r.claims[id]
	if !ok {
		delete(r.refusing, id)
		return
	}
	en, why := r.refusal(a)
	if why != "" {
		r.refused.WithLabelValues(why).Inc()
		if r.refusing[id] != why {
			r.refusing[id] = why
			r.log.Warn("agent claim refused", "agent", id, "host", a.Host().String(), "reason", why)
		}
		return
	}
	prev := r.refusing[id]
	delete(r.refusing, id)
	if a.HostID != 0 && !slices.Contains(en.HostIDs, a.HostID) {
		r.refused.WithLabelValues(refusedHostID).Inc()
		if prev != refusedHostID {
			r.log.Warn("agent host id claim refused", "agent", id, "host_id", a.HostID, "reason", refusedHostID)
		}
		r.refusing[id] = refusedHostID
		a.HostID = 0
	}
	a.Labels = trustedLabels(a.Labels, en.Labels)
	now := time.Now()
	if a.Online(now, r.ttl) && !(had && old.Online(now, r.ttl) && old.Host() == a.Host() && old.Pool == a.Pool) {
		r.arrivals.Add(1)
	}
	r.agents[id] = a
	r.byHost[a.Host()] = append(r.byHost[a.Host()], id)
}

// refusal says why a claim is refused, or "" when its enrolment (which
// it returns) allows it.
func (r *Registry) refusal(a schemas.AgentInfo) (schemas.Enrolment, string) {
	if a.ID == "" {
		return schemas.Enrolment{}, refusedRecord
	}
	key := a.ID
	if a.Simulated {
		pool, ok := schemas.SimulatedOf(a)
		if !ok {
			return schemas.Enrolment{}, refusedRecord
		}
		key = pool
	}
	en, ok := r.enrolments[key]
	switch {
	case !ok || en.Simulator != a.Simulated:
		return en, refusedNotEnrolled
	case en.Revoked != nil:
		return en, refusedRevoked
	case !en.Allows(a.Host()):
		return en, refusedHost
	}
	return en, ""
}

// trustedLabels are an agent's own labels with its enrolment's on top:
// what an admin enrolled it with wins over what it says of itself.
func trustedLabels(claimed, enrolled map[string]string) map[string]string {
	if len(enrolled) == 0 {
		return claimed
	}
	out := make(map[string]string, len(claimed)+len(enrolled))
	for k, v := range claimed {
		out[k] = v
	}
	for k, v := range enrolled {
		out[k] = v
	}
	return out
}

// Enrolment returns the enrolment an agent's claims are judged by (its
// pool's for a simulated identity).
func (r *Registry) Enrolment(id string) (schemas.Enrolment, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	key := id
	if a, ok := r.claims[id]; ok {
		if pool, ok := schemas.SimulatedOf(a); ok {
			key = pool
		}
	}
	en, ok := r.enrolments[key]
	return en, ok
}
