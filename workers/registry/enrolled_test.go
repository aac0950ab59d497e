package registry

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/schemas"
)

func enrolEntry(en schemas.Enrolment) entry {
	b, _ := json.Marshal(en)
	return entry{key: en.Agent, value: b}
}

func claim(a schemas.AgentInfo) entry {
	b, _ := json.Marshal(a)
	return entry{key: a.ID, value: b, at: a.LastSeen}
}

// The registry serves an agent only for the hosts its enrolment allows:
// an unenrolled agent, a claim to another host, a record under another
// agent's key and a revoked agent are refused and counted, and an
// enrolment change is judged at once.
func TestClaimsAreJudgedByEnrolment(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	r := New(nil, nil, time.Minute, nil)
	h1, h2 := schemas.Host{IP: "10.0.0.1"}, schemas.Host{IP: "10.0.0.2"}
	served := func(h schemas.Host) string {
		a, ok := r.Lookup(h, now)
		if !ok {
			return ""
		}
		return a.ID
	}
	reg := prometheus.NewRegistry()
	r.Register(reg)
	refused := func(reason string) float64 { return counted(t, reg, reason) }

	r.apply(ctx, claim(schemas.AgentInfo{ID: "a1", IP: h1.IP, LastSeen: now}), now)
	if served(h1) != "" || refused(refusedNotEnrolled) != 1 {
		t.Fatalf("an agent without enrolment serves %s", h1)
	}
	r.applyEnrolment(enrolEntry(schemas.Enrolment{Agent: "a1", Hosts: []schemas.Host{h1}, Labels: map[string]string{"role": "db"}}))
	if served(h1) != "a1" {
		t.Fatal("enrolment did not admit the agent's standing claim")
	}
	r.apply(ctx, claim(schemas.AgentInfo{ID: "a1", IP: h1.IP, LastSeen: now, Labels: map[string]string{"role": "web", "os": "linux"}}), now)
	if a, _ := r.Agent("a1"); a.Labels["role"] != "db" || a.Labels["os"] != "linux" {
		t.Fatalf("labels %v: the enrolment's must win over the agent's own", a.Labels)
	}
	// a CMDB host id it was not enrolled with is ignored (the host is still served)
	r.apply(ctx, claim(schemas.AgentInfo{ID: "a1", IP: h1.IP, LastSeen: now, HostID: 101}), now)
	if a, _ := r.Agent("a1"); a.HostID != 0 || served(h1) != "a1" || refused(refusedHostID) != 1 {
		t.Fatalf("claimed host id kept: %+v", a)
	}
	if _, ok := r.ByHostID(101, now); ok {
		t.Fatal("an unenrolled host id resolves to the agent")
	}
	r.applyEnrolment(enrolEntry(schemas.Enrolment{Agent: "a1", Hosts: []schemas.Host{h1}, HostIDs: []int64{101}}))
	if a, _ := r.Agent("a1"); a.HostID != 101 {
		t.Fatalf("an enrolled host id is not kept: %+v", a)
	}
	// a1 now claims h2, which it was not enrolled for
	r.apply(ctx, claim(schemas.AgentInfo{ID: "a1", IP: h2.IP, LastSeen: now}), now)
	if served(h2) != "" || served(h1) != "" || refused(refusedHost) != 1 {
		t.Fatalf("claim outside the enrolment: h2 served by %q, h1 by %q", served(h2), served(h1))
	}
	if _, ok := r.Agent("a1"); ok || len(r.All()) != 0 {
		t.Fatal("an agent with a refused claim is listed")
	}
	if !r.Gone(h2, now) {
		t.Fatal("a host claimed outside an enrolment is not gone")
	}
	// a record written under a1's key naming another agent is nobody's
	r.apply(ctx, entry{key: "a1", value: mustJSON(schemas.AgentInfo{ID: "a9", IP: h1.IP, LastSeen: now}), at: now}, now)
	if served(h1) != "" || refused(refusedRecord) != 1 {
		t.Fatal("a record under another agent's key was accepted")
	}
	r.apply(ctx, claim(schemas.AgentInfo{ID: "a1", IP: h1.IP, LastSeen: now}), now)
	if served(h1) != "a1" {
		t.Fatal("the enrolled claim is not served")
	}
	revoked := now
	r.applyEnrolment(enrolEntry(schemas.Enrolment{Agent: "a1", Hosts: []schemas.Host{h1}, Revoked: &revoked}))
	if served(h1) != "" || refused(refusedRevoked) != 1 {
		t.Fatal("a revoked agent is still served")
	}
	r.applyEnrolment(entry{key: "a1"}) // a deleted enrolment (the entry's op is a put of nothing)
	if served(h1) != "" {
		t.Fatal("an agent whose enrolment is unreadable is served")
	}
}

// A simulator pool enrols once, for a range: its identities are served in
// the range only, a real agent cannot use a pool's enrolment, and
// revoking the pool drops every identity.
func TestSimulatorPoolEnrolment(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	r := New(nil, nil, time.Minute, nil)
	r.applyEnrolment(enrolEntry(schemas.Enrolment{Agent: "sim", Simulator: true,
		Ranges: []schemas.HostRange{{First: "10.200.0.1", Last: "10.200.0.10"}}}))
	sim := func(i int, ip string) schemas.AgentInfo {
		return schemas.AgentInfo{ID: "sim-" + string(rune('0'+i)), IP: ip, LastSeen: now, Pool: "sim", Simulated: true}
	}
	r.apply(ctx, claim(sim(0, "10.200.0.1")), now)
	r.apply(ctx, claim(sim(1, "10.200.0.10")), now)
	r.apply(ctx, claim(sim(2, "10.200.0.11")), now)
	if len(r.All()) != 2 {
		t.Fatalf("served %v, want the two identities in the range", r.All())
	}
	r.apply(ctx, claim(schemas.AgentInfo{ID: "sim", IP: "10.200.0.2", LastSeen: now}), now)
	r.apply(ctx, claim(schemas.AgentInfo{ID: "x-1", IP: "10.200.0.3", LastSeen: now, Pool: "sim", Simulated: true}), now)
	if len(r.All()) != 2 {
		t.Fatalf("served %v: a real agent or a foreign identity used the pool's enrolment", r.All())
	}
	revoked := now
	r.applyEnrolment(enrolEntry(schemas.Enrolment{Agent: "sim", Simulator: true, Revoked: &revoked,
		Ranges: []schemas.HostRange{{First: "10.200.0.1", Last: "10.200.0.10"}}}))
	if len(r.All()) != 0 {
		t.Fatalf("served %v after the pool was revoked", r.All())
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// counted reads the refused-claims counter of one reason.
func counted(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if mf.GetName() == "fleetjob_registry_claims_refused_total" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// A heartbeat that repeats an agent's names keeps the strings the
// registry already holds (the decoded copies die young), and one that
// changes them is taken as sent.
func TestHeartbeatsKeepTheHeldStrings(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	r := New(nil, nil, time.Minute, nil)
	a := schemas.AgentInfo{ID: "a1", IP: "10.0.0.1", Hostname: "web-1", Version: "1.2.3", Labels: map[string]string{"role": "web"}, LastSeen: now}
	r.apply(ctx, claim(a), now)
	first := r.claims["a1"]
	a.LastSeen = now.Add(5 * time.Second)
	r.apply(ctx, claim(a), a.LastSeen)
	again := r.claims["a1"]
	if !again.LastSeen.Equal(a.LastSeen) {
		t.Fatalf("heartbeat not taken: %v", again.LastSeen)
	}
	same := func(x, y string) bool { return unsafe.StringData(x) == unsafe.StringData(y) }
	if !same(first.ID, again.ID) || !same(first.IP, again.IP) || !same(first.Hostname, again.Hostname) || !same(first.Version, again.Version) {
		t.Errorf("a repeated heartbeat's names are new copies")
	}
	if reflect.ValueOf(first.Labels).UnsafePointer() != reflect.ValueOf(again.Labels).UnsafePointer() {
		t.Errorf("a repeated heartbeat's labels are a new map")
	}
	a.Version, a.Labels = "1.2.4", map[string]string{"role": "db"}
	r.apply(ctx, claim(a), a.LastSeen)
	if got := r.claims["a1"]; got.Version != "1.2.4" || got.Labels["role"] != "db" || !same(got.IP, first.IP) {
		t.Errorf("a changed heartbeat: %+v", got)
	}
}
