// Package artifactrelay moves file steps' files between agents and the
// artifacts object store. Agents have no access to the store: the store's
// chunk subjects ($O.artifacts.C.<nuid>) name no job or agent, so NATS
// permissions cannot narrow them per object. An agent asks the relay on a
// subject carrying its own id (schemas.XferGetSubject, XferPutSubject);
// the relay, run by the workers as a queue group, checks the request
// against the job and the agent registry and then serves it: a download's
// chunks come straight from the stream to the agent's inbox (a batch
// direct get the relay issues with the agent's reply subject), an upload's
// chunks go through the relay into the store under a name the relay
// checks. Client is the agent's side, a filexfer.Objects.
package artifactrelay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/schemas"
)

// queueGroup is the relay's queue group: one relay of all those running
// takes each request.
const queueGroup = "fleetjob-xfer"

// maxBatch bounds the chunks one read sends.
const maxBatch = 64

// Jobs loads a job's spec and state.
type Jobs interface {
	Load(ctx context.Context, id int64) (*schemas.JobSpec, *schemas.JobState, uint64, error)
}

// Directory is the agent registry: who is enrolled and serves which host.
type Directory interface {
	Agent(id string) (schemas.AgentInfo, bool)
}

// Metrics are the relay's collectors.
type Metrics struct {
	Refused *prometheus.CounterVec
}

// NewMetrics registers the relay's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fleetjob_artifacts_refused_total",
		Help: "Artifact transfer requests the relay refused: an agent asking for an object its task does not send it, or storing one its task does not make, by operation and reason.",
	}, []string{"op", "reason"})}
	reg.MustRegister(m.Refused)
	return m
}

// Relay serves agents' transfer requests.
type Relay struct {
	nc     *nats.Conn
	obs    jetstream.ObjectStore
	chunks string // the store's chunk subjects' prefix, $O.<bucket>.C.
	stream string // the store's stream, OBJ_<bucket>
	jobs   Jobs
	dir    Directory
	m      *Metrics
	log    *slog.Logger
	grants grants
	infos  infoCache
	sem    chan struct{}
	wg     sync.WaitGroup

	mu       sync.Mutex
	sessions map[string]*session
}

// New builds a relay over obs, the artifacts store (schemas.BucketArtifacts).
func New(nc *nats.Conn, obs jetstream.ObjectStore, jobs Jobs, dir Directory, m *Metrics, log *slog.Logger) *Relay {
	return &Relay{
		nc: nc, obs: obs, stream: "OBJ_" + schemas.BucketArtifacts, chunks: "$O." + schemas.BucketArtifacts + ".C.", jobs: jobs, dir: dir, m: m,
		log:      log.With("component", "artifactrelay"),
		grants:   grants{m: map[grantKey]*grant{}},
		infos:    infoCache{m: map[string]cachedInfo{}},
		sem:      make(chan struct{}, 64),
		sessions: map[string]*session{},
	}
}

// Run serves requests until ctx ends, then stops taking them, aborts open
// upload sessions and waits for requests in flight.
func (r *Relay) Run(ctx context.Context) error {
	var subs []*nats.Subscription
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	for _, subj := range []string{schemas.SubjXferGet, schemas.SubjXferPut} {
		s, err := r.nc.QueueSubscribe(subj, queueGroup, func(m *nats.Msg) { r.dispatch(ctx, m) })
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", subj, err)
		}
		subs = append(subs, s)
	}
	<-ctx.Done()
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
	r.mu.Lock()
	for _, s := range r.sessions {
		s.abort(errors.New("relay stopping"))
	}
	r.mu.Unlock()
	r.wg.Wait()
	return nil
}

// dispatch hands a request to a bounded pool of goroutines: a check that
// loads a job must not hold up the chunks of other transfers.
func (r *Relay) dispatch(ctx context.Context, m *nats.Msg) {
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	r.wg.Add(1)
	go func() {
		defer func() { <-r.sem; r.wg.Done() }()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		r.serve(rctx, m)
	}()
}

// asker is who sent a request, read from its subject.
type asker struct {
	pool, agent string
	put         bool
}

func (r *Relay) serve(ctx context.Context, m *nats.Msg) {
	pool, agent, put, ok := schemas.ParseXferSubject(m.Subject)
	op := "get"
	if put {
		op = "put"
	}
	if !ok {
		r.refuse(m, op, reasonSubject, nil, asker{})
		return
	}
	who := asker{pool: pool, agent: agent, put: put}
	// Answers go to the asker's own inbox only: a read's chunks are sent
	// by the server to this subject, and any other would let an agent
	// point the store's content at a subject someone else listens on.
	if !strings.HasPrefix(m.Reply, agentInbox(agent)) {
		r.refuse(m, op, reasonReply, nil, who)
		return
	}
	var req schemas.XferRequest
	if err := json.Unmarshal(m.Data, &req); err != nil || req.Validate() != nil {
		r.refuse(m, op, reasonRequest, nil, who)
		return
	}
	op = req.Op
	if (put && req.Op == schemas.XferRead) || (!put && req.Op == schemas.XferBegin) {
		r.refuse(m, op, reasonRequest, &req, who)
		return
	}
	g, reason, err := r.grants.check(ctx, r, who, &req)
	if err != nil {
		r.fail(m, err)
		return
	}
	if reason != "" {
		r.refuse(m, op, reason, &req, who)
		return
	}
	switch req.Op {
	case schemas.XferInfo:
		r.serveInfo(ctx, m, req.Object)
	case schemas.XferRead:
		r.serveRead(ctx, m, &req)
	case schemas.XferBegin:
		r.begin(ctx, m, who, &req, g)
	}
}

// agentInbox is the prefix of agent's inbox subjects.
func agentInbox(agent string) string { return "_INBOX_AGENT." + agent + "." }

func (r *Relay) serveInfo(ctx context.Context, m *nats.Msg, object string) {
	info, err := r.infos.get(ctx, r.obs, object, true)
	if err != nil {
		r.fail(m, err)
		return
	}
	b, _ := json.Marshal(schemas.XferObject{Object: info.Name, NUID: info.NUID, Size: info.Size, Chunks: info.Chunks,
		Digest: info.Digest, Meta: info.Metadata})
	_ = m.Respond(b)
}

// serveRead asks the stream to send the object's chunks after req.After
// to the agent's reply subject: the filter is the chunk subject of the
// object the agent may read, whatever sequence it names.
func (r *Relay) serveRead(ctx context.Context, m *nats.Msg, req *schemas.XferRequest) {
	info, err := r.infos.get(ctx, r.obs, req.Object, false)
	if err == nil && info.NUID != req.NUID {
		info, err = r.infos.get(ctx, r.obs, req.Object, true)
		if err == nil && info.NUID != req.NUID {
			err = fmt.Errorf("object %s was replaced: %w", req.Object, jetstream.ErrObjectNotFound)
		}
	}
	if err != nil {
		r.fail(m, err)
		return
	}
	batch := min(max(req.Batch, 1), maxBatch)
	get, _ := json.Marshal(struct {
		Seq      uint64 `json:"seq"`
		NextFor  string `json:"next_by_subj"`
		Batch    int    `json:"batch"`
		MaxBytes int    `json:"max_bytes"`
	}{req.After + 1, r.chunks + info.NUID, batch, batch * (maxChunk + 1024)})
	if err := r.nc.PublishMsg(&nats.Msg{Subject: "$JS.API.DIRECT.GET." + r.stream, Reply: m.Reply, Data: get}); err != nil {
		r.fail(m, err)
	}
}

// maxChunk bounds the stored chunk size the relay reads in batches (the
// store's default chunk is 128 KiB; the relay's uploads use it).
const maxChunk = 128 << 10

// refuse answers a request the asker may not make, logs and counts it.
func (r *Relay) refuse(m *nats.Msg, op, reason string, req *schemas.XferRequest, who asker) {
	r.m.Refused.WithLabelValues(op, reason).Inc()
	attrs := []any{"subject", m.Subject, "op", op, "reason", reason, "agent", who.agent}
	if req != nil {
		attrs = append(attrs, "job", req.JobID, "step", req.Step, "unit", req.Unit, "object", req.Object)
	}
	r.log.Warn("transfer refused", attrs...)
	if m.Reply != "" && strings.HasPrefix(m.Reply, agentInbox(who.agent)) {
		respondErr(m, schemas.XferErrRefused, "refused: "+reason)
	}
}

// fail answers a request the relay could not serve.
func (r *Relay) fail(m *nats.Msg, err error) {
	code := schemas.XferErrFailed
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		code = schemas.XferErrNotFound
	} else {
		r.log.Warn("transfer failed", "subject", m.Subject, "err", err)
	}
	respondErr(m, code, err.Error())
}

func respondErr(m *nats.Msg, code, text string) {
	reply := nats.NewMsg(m.Reply)
	reply.Header.Set(schemas.XferErrorHeader, code)
	reply.Data = []byte(text)
	_ = m.RespondMsg(reply)
}

// infoCache keeps objects' infos briefly: every read of a transfer needs
// its object's chunk subject.
type infoCache struct {
	mu sync.Mutex
	m  map[string]cachedInfo
}

type cachedInfo struct {
	info *jetstream.ObjectInfo
	at   time.Time
}

// infoTTL is how long an object's info is reused.
const infoTTL = 10 * time.Second

// get returns object's info; fresh asks the store whatever is cached.
// Links and deleted objects are not served.
func (c *infoCache) get(ctx context.Context, obs jetstream.ObjectStore, object string, fresh bool) (*jetstream.ObjectInfo, error) {
	now := time.Now()
	c.mu.Lock()
	ci, ok := c.m[object]
	c.mu.Unlock()
	if ok && !fresh && now.Sub(ci.at) < infoTTL {
		return ci.info, nil
	}
	info, err := obs.GetInfo(ctx, object)
	if err != nil {
		return nil, fmt.Errorf("object %s: %w", object, err)
	}
	if info.Deleted || (info.Opts != nil && info.Opts.Link != nil) {
		return nil, fmt.Errorf("object %s is a link or deleted: %w", object, jetstream.ErrObjectNotFound)
	}
	c.mu.Lock()
	if len(c.m) > 10000 {
		clear(c.m)
	}
	c.m[object] = cachedInfo{info: info, at: now}
	c.mu.Unlock()
	return info, nil
}
