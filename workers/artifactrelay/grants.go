package artifactrelay

// This file holds the check every request passes: the subject names who
// asks (the server lets an agent publish only on its own), and that agent
// must be the one the registry has for a host the job's step sends the
// object to (a download) or takes it from (an upload).

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/fleetjob/fleetjob/schemas"
)

// Reasons a request is refused, the label values of
// fleetjob_artifacts_refused_total.
const (
	reasonSubject   = "bad_subject"    // not a transfer subject's shape
	reasonReply     = "bad_reply"      // answers asked for outside the agent's inbox
	reasonRequest   = "bad_request"    // undecodable, or an operation of the other direction
	reasonUnknown   = "unknown_agent"  // no such agent in the registry
	reasonPool      = "pool_mismatch"  // the agent is not of the subject's pool
	reasonJob       = "unknown_job"    // no such job
	reasonStep      = "not_file_step"  // no such step, or not a file step
	reasonUnit      = "unknown_unit"   // no such upload unit
	reasonNotHostOf = "not_dispatched" // the agent does not serve a host of the step (or unit)
	reasonObject    = "object_not_in_step"
)

// grantTTL is how long a decision that an agent may transfer a step's
// files is reused: a multi-chunk transfer does not load the job for each
// chunk. A re-enrolment that moves the agent to another host changes the
// key; a revoked agent's connection is cut by the server.
const grantTTL = 30 * time.Second

// grantKey names one decision: this agent, on this host, for this step
// (and upload unit) of this job, in one direction.
type grantKey struct {
	job        int64
	step, unit int
	pool       string
	agent      string
	host       schemas.Host
	put        bool
}

// grant is what an agent may transfer for a step.
type grant struct {
	at time.Time
	// objects are the step's manifest, which a target may read.
	objects map[string]bool
	// prefix starts every object an upload unit may write ("job/…/u0/").
	prefix string
}

func (g *grant) allows(put bool, object string) bool {
	if put {
		return len(object) > len(g.prefix) && strings.HasPrefix(object, g.prefix)
	}
	return g.objects[object]
}

type grants struct {
	mu sync.Mutex
	m  map[grantKey]*grant
}

// check says why req from who must be refused ("" when it may be served),
// with the grant that allows it. An error is a job that could not be
// loaded: the request fails and may be asked again.
func (gs *grants) check(ctx context.Context, r *Relay, who asker, req *schemas.XferRequest) (*grant, string, error) {
	a, ok := r.dir.Agent(who.agent)
	if !ok {
		return nil, reasonUnknown, nil
	}
	if a.TaskPool() != who.pool {
		return nil, reasonPool, nil
	}
	key := grantKey{job: req.JobID, step: req.Step, pool: who.pool, agent: who.agent, host: a.Host(), put: who.put}
	if who.put {
		key.unit = req.Unit
	}
	now := time.Now()
	gs.mu.Lock()
	g, ok := gs.m[key]
	gs.mu.Unlock()
	// A download may ask for an object the cached manifest lacks when
	// uploads were retried since: look again, at most once a second.
	if ok && now.Sub(g.at) < grantTTL && (g.allows(who.put, req.Object) || now.Sub(g.at) < time.Second) {
		if !g.allows(who.put, req.Object) {
			return nil, reasonObject, nil
		}
		return g, "", nil
	}
	g, reason, err := decide(ctx, r.jobs, key)
	if err != nil || reason != "" {
		return nil, reason, err
	}
	g.at = now
	gs.mu.Lock()
	if len(gs.m) > 10000 {
		clear(gs.m)
	}
	gs.m[key] = g
	gs.mu.Unlock()
	if !g.allows(who.put, req.Object) {
		return nil, reasonObject, nil
	}
	return g, "", nil
}

// decide loads the job and says what key's agent may transfer.
func decide(ctx context.Context, jobs Jobs, key grantKey) (*grant, string, error) {
	spec, st, _, err := jobs.Load(ctx, key.job)
	if errors.Is(err, schemas.ErrNotFound) {
		return nil, reasonJob, nil
	}
	if err != nil {
		return nil, "", err
	}
	if key.step >= len(spec.Steps) || spec.Steps[key.step].File == nil {
		return nil, reasonStep, nil
	}
	step := spec.Steps[key.step]
	if key.put {
		units := step.File.UploadUnits()
		if key.unit >= len(units) {
			return nil, reasonUnit, nil
		}
		if units[key.unit].Host != key.host {
			return nil, reasonNotHostOf, nil
		}
		return &grant{prefix: schemas.UploadPrefix(key.job, key.step, key.unit) + "/"}, "", nil
	}
	target := false
	for _, h := range step.Targets {
		if h == key.host {
			target = true
			break
		}
	}
	if !target {
		return nil, reasonNotHostOf, nil
	}
	g := &grant{objects: map[string]bool{}}
	if key.step < len(st.Steps) {
		for _, e := range st.Steps[key.step].Manifest {
			g.objects[e.Object] = true
		}
	}
	return g, "", nil
}
