package registry

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
)

// entry is a KV entry as the watch delivers it.
type entry struct {
	key   string
	value []byte
	at    time.Time
}

func (e entry) Bucket() string                  { return schemas.BucketAgents }
func (e entry) Key() string                     { return e.key }
func (e entry) Value() []byte                   { return e.value }
func (e entry) Revision() uint64                { return 1 }
func (e entry) Created() time.Time              { return e.at }
func (e entry) Delta() uint64                   { return 0 }
func (e entry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

func agentEntry(id, ip string, seen time.Time) entry {
	b, _ := json.Marshal(schemas.AgentInfo{ID: id, IP: ip, LastSeen: seen})
	return entry{key: id, value: b, at: seen}
}

// An agent silent past its TTL is gone while the registry's own probes
// keep arriving; while the watch is stalled nobody is gone; once it
// resumes every agent gets a full TTL from then.
func TestGoneOnlyWhenTheViewIsFresh(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC)
	host := schemas.Host{IP: "10.0.0.1"}
	const ttl = 10 * time.Second

	fresh := New(nil, nil, ttl, nil)
	fresh.heard, fresh.resumed = t0, t0
	fresh.enrolments["a1"] = schemas.Enrolment{Agent: "a1", Hosts: []schemas.Host{host}}
	fresh.apply(ctx, agentEntry("a1", host.IP, t0), t0)
	for at := t0; !at.After(t0.Add(ttl)); at = at.Add(probeEvery) {
		fresh.apply(ctx, entry{key: fresh.probe, at: at}, at)
		if fresh.Gone(host, at) {
			t.Fatalf("gone at +%s, within its TTL", at.Sub(t0))
		}
	}
	fresh.apply(ctx, entry{key: fresh.probe, at: t0.Add(12 * time.Second)}, t0.Add(12*time.Second))
	if !fresh.Gone(host, t0.Add(12*time.Second)) {
		t.Fatal("silent for 12 s with a fresh view (TTL 10 s): not gone")
	}

	stalled := New(nil, nil, ttl, nil)
	stalled.heard, stalled.resumed = t0, t0
	stalled.enrolments["a1"] = schemas.Enrolment{Agent: "a1", Hosts: []schemas.Host{host}}
	stalled.apply(ctx, agentEntry("a1", host.IP, t0), t0)
	// the watch delivers nothing for 20 s (a failover)
	if stalled.Gone(host, t0.Add(20*time.Second)) {
		t.Fatal("gone while the watch was stalled")
	}
	// it resumes with our probe at +20 s: the agent has until +30 s
	resume := t0.Add(20 * time.Second)
	for at := resume; at.Before(t0.Add(33 * time.Second)); at = at.Add(probeEvery) {
		stalled.apply(ctx, entry{key: stalled.probe, at: at}, at)
		if at.Sub(resume) <= ttl && stalled.Gone(host, at) {
			t.Fatalf("gone at +%s, %s after the watch resumed (TTL %s)", at.Sub(t0), at.Sub(resume), ttl)
		}
	}
	if !stalled.Gone(host, t0.Add(32*time.Second)) {
		t.Fatal("still not gone 12 s after the watch resumed")
	}
	// and a live agent heard after the resume is not gone
	stalled.apply(ctx, agentEntry("a1", host.IP, t0.Add(31*time.Second)), t0.Add(31*time.Second))
	if stalled.Gone(host, t0.Add(32*time.Second)) {
		t.Fatal("gone right after a heartbeat")
	}
	if _, ok := stalled.Agent(stalled.probe); ok {
		t.Fatal("the probe key is listed as an agent")
	}
}

// Arrivals counts agents coming online (new, back after their TTL, back
// from stopping, moved to another host), not heartbeats of agents online.
func TestArrivalsCountAgentsComingOnline(t *testing.T) {
	ctx := context.Background()
	const ttl = 10 * time.Second
	h1, h2, h3 := schemas.Host{IP: "10.0.0.1"}, schemas.Host{IP: "10.0.0.2"}, schemas.Host{IP: "10.0.0.3"}
	r := New(nil, nil, ttl, nil)
	r.enrolments["a1"] = schemas.Enrolment{Agent: "a1", Hosts: []schemas.Host{h1, h3}}
	r.enrolments["a2"] = schemas.Enrolment{Agent: "a2", Hosts: []schemas.Host{h2}}
	now := time.Now()
	stopping := func(id, ip string) entry {
		b, _ := json.Marshal(schemas.AgentInfo{ID: id, IP: ip, LastSeen: now, Stopping: true})
		return entry{key: id, value: b, at: now}
	}
	for i, c := range []struct {
		what string
		e    entry
		want uint64
	}{
		{"a new agent", agentEntry("a1", h1.IP, now), 1},
		{"its heartbeat", agentEntry("a1", h1.IP, now), 1},
		{"a record older than the TTL", agentEntry("a2", h2.IP, now.Add(-2*ttl)), 1},
		{"that agent heard again", agentEntry("a2", h2.IP, now), 2},
		{"an agent moved to another host", agentEntry("a1", h3.IP, now), 3},
		{"an agent stopping", stopping("a1", h3.IP), 3},
		{"an agent back from stopping", agentEntry("a1", h3.IP, now), 4},
	} {
		r.apply(ctx, c.e, now)
		if got := r.Arrivals(); got != c.want {
			t.Fatalf("step %d, %s: %d arrivals, want %d", i, c.what, got, c.want)
		}
	}
}
