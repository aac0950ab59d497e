// Package roles is fleetjob's composition root: it wires the parts into
// runnable roles (api, workers, agent, simulator) over shared plumbing,
// for the binary and for tests, and adapts the workers' stores to the
// API core's read interfaces.
package roles

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/api/bkjob"
	"github.com/fleetjob/fleetjob/api/native"
	"github.com/fleetjob/fleetjob/api/octans"
	"github.com/fleetjob/fleetjob/api/riskrules"
	"github.com/fleetjob/fleetjob/internal/outbound"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
	"github.com/fleetjob/fleetjob/workers/artifactrelay"
	"github.com/fleetjob/fleetjob/workers/callback"
	"github.com/fleetjob/fleetjob/workers/logindex"
	"github.com/fleetjob/fleetjob/workers/orchestrator"
	"github.com/fleetjob/fleetjob/workers/registry"
	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// AgentTTL is how long an agent counts as online after its last heartbeat.
const AgentTTL = 15 * time.Second

// Plumbing is what every role shares.
type Plumbing struct {
	NC  *nats.Conn
	JS  jetstream.JetStream
	RDB redis.UniversalClient
	Top schemas.Topology
	Reg *prometheus.Registry
	Log *slog.Logger
	// OutboundAllow are the internal address prefixes requests to client
	// URLs (callbacks) may go to; every other internal address is refused.
	OutboundAllow []netip.Prefix
	// CacheRetention bounds the finished jobs the status cache keeps
	// (statuscache.DefaultRetention for the Redis in use).
	CacheRetention statuscache.Retention
	// SpecCache is how many job specs a worker process keeps in memory
	// (0: orchestrator.DefaultSpecs).
	SpecCache int
	// CreateWindow is how long a small job's first commit waits for its
	// first reports (0: orchestrator.DefaultCreateWindow; negative: it is
	// written at once).
	CreateWindow time.Duration
}

// Cache returns the status cache over this plumbing.
func (p Plumbing) Cache(ctx context.Context) (*statuscache.Cache, error) {
	kv, err := p.JS.KeyValue(ctx, schemas.BucketJobs)
	if err != nil {
		return nil, fmt.Errorf("jobs bucket: %w", err)
	}
	cmds, err := p.JS.Stream(ctx, schemas.StreamJobs)
	if err != nil {
		return nil, fmt.Errorf("jobs stream: %w", err)
	}
	c := statuscache.New(p.RDB, kv, cmds, p.Log)
	c.Retain(p.CacheRetention)
	return c, nil
}

// Registry returns an agent registry (not yet running).
func (p Plumbing) Registry(ctx context.Context) (*registry.Registry, error) {
	kv, err := p.JS.KeyValue(ctx, schemas.BucketAgents)
	if err != nil {
		return nil, fmt.Errorf("agents bucket: %w", err)
	}
	enrolled, err := p.JS.KeyValue(ctx, schemas.BucketEnrolled)
	if err != nil {
		return nil, fmt.Errorf("enrolled bucket: %w", err)
	}
	r := registry.New(kv, enrolled, AgentTTL, p.Log)
	r.Register(p.Reg)
	return r, nil
}

// RunWorkers runs n workers, one log indexer and one artifact relay until
// ctx ends.
func RunWorkers(ctx context.Context, p Plumbing, n int, name string) error {
	cache, err := p.Cache(ctx)
	if err != nil {
		return err
	}
	dir, err := p.Registry(ctx)
	if err != nil {
		return err
	}
	m := orchestrator.NewMetrics(p.Reg)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return dir.Run(gctx) })
	select {
	case <-dir.Ready():
	case <-gctx.Done():
		return g.Wait()
	}
	if err := cache.EnsureBuilt(ctx); err != nil {
		p.Log.Warn("status cache not rebuilt at start; it will be on first read", "err", err)
	}
	g.Go(func() error { return logindex.NewIndexer(p.JS, p.RDB, p.Top, p.Log).Run(gctx) })
	jobsKV, err := p.JS.KeyValue(ctx, schemas.BucketJobs)
	if err != nil {
		return fmt.Errorf("jobs bucket: %w", err)
	}
	g.Go(func() error {
		return callback.New(p.JS, jobsKV, cache, callback.Codes{RunStatus: bkjob.BKRunStatus, StepInstanceID: bkjob.BKStepInstanceID}, outbound.New(p.OutboundAllow...), p.Log).Run(gctx)
	})
	g.Go(func() error { return m.Observe(gctx, p.JS, dir.All, AgentTTL, 5*time.Second) })
	g.Go(func() error { return cache.RunTrimmer(gctx, 10*time.Second) })
	g.Go(func() error { return cache.RunRepairs(gctx, 2*time.Second) })
	// agents move files only through the relay: one per process, in a
	// queue group with every other worker process's
	obs, err := p.JS.ObjectStore(ctx, schemas.BucketArtifacts)
	if err != nil {
		return fmt.Errorf("artifacts store: %w", err)
	}
	relay := artifactrelay.New(p.NC, obs, cache, dir, artifactrelay.NewMetrics(p.Reg), p.Log)
	g.Go(func() error { return relay.Run(gctx) })
	// one segment cache, spec cache and set of held first commits for
	// the process's workers
	window := p.CreateWindow
	if window == 0 {
		window = orchestrator.DefaultCreateWindow
	}
	segs, specs, creations, heavy := orchestrator.NewSegments(), orchestrator.NewSpecs(p.SpecCache), orchestrator.NewCreations(window), orchestrator.NewHeavy()
	for i := 0; i < n; i++ {
		w, err := orchestrator.New(ctx, orchestrator.Config{Name: fmt.Sprintf("%s-%d", name, i), Topology: p.Top, Segments: segs, Specs: specs,
			Creations: creations, Heavy: heavy},
			p.NC, p.JS, dir, cache, m, p.Log)
		if err != nil {
			return err
		}
		g.Go(func() error { return w.Run(gctx) })
	}
	p.Log.Info("workers running", "workers", n, "name", name)
	return g.Wait()
}

// APIConfig is what the API role needs to know.
type APIConfig struct {
	// Token is the admin credential: the native API's bearer token and
	// the BlueKing apps' bk_app_secret.
	Token string
	// OctansAllow admits octans clients that send no token from these
	// source networks, each as an operator of the grant's scopes.
	OctansAllow []api.NetworkGrant
	// Rate and Burst bound each credential's requests per second (0: no
	// limit); the admin token is exempt.
	Rate  float64
	Burst int
	// RiskRules is a rule file (JSON) that replaces the shipped high-risk
	// command rules; empty keeps the defaults.
	RiskRules string
	// SealKeyFile keeps the API's curve key (made 0600 when missing), which
	// seals sensitive values to agents; empty uses a key of this process's
	// own (agents learn the sender's public key with each sealed value).
	SealKeyFile string
	// Issuer signs enrolled agents' NATS credentials; nil issues none
	// (NATS without authentication) but still prepares their consumers.
	Issuer api.AgentIssuer
	// AgentNATSURLs are the NATS URLs enrolled agents are told to join.
	AgentNATSURLs []string
}

// RunAPI serves the HTTP API on ln until ctx ends.
func RunAPI(ctx context.Context, p Plumbing, ln net.Listener, cfg APIConfig) error {
	cache, err := p.Cache(ctx)
	if err != nil {
		return err
	}
	dir, err := p.Registry(ctx)
	if err != nil {
		return err
	}
	names, err := p.JS.KeyValue(ctx, schemas.BucketNames)
	if err != nil {
		return fmt.Errorf("names bucket: %w", err)
	}
	// octans task names in memory: a named run costs one round trip
	claims, err := api.NewWatchedNames(ctx, p.JS, names, []string{octans.ClaimKind}, p.Log)
	if err != nil {
		return err
	}
	logs, err := logindex.NewReader(ctx, p.JS, p.RDB, p.Log)
	if err != nil {
		return err
	}
	rules := riskrules.Defaults()
	if cfg.RiskRules != "" {
		if rules, err = riskrules.Load(cfg.RiskRules); err != nil {
			return err
		}
	}
	risk, err := riskrules.New(rules)
	if err != nil {
		return fmt.Errorf("high-risk rules: %w", err)
	}
	dead, err := p.JS.KeyValue(ctx, schemas.BucketDeadLetters)
	if err != nil {
		return fmt.Errorf("dead letters bucket: %w", err)
	}
	accounts, err := openAccounts(ctx, p)
	if err != nil {
		return err
	}
	sealKey, enrolled, err := sealing(ctx, p, cfg.SealKeyFile)
	if err != nil {
		return err
	}
	enroller, err := p.Enroller(ctx, cfg.Issuer, cfg.AgentNATSURLs)
	if err != nil {
		return err
	}
	idents, err := p.JS.KeyValue(ctx, schemas.BucketIdentities)
	if err != nil {
		return fmt.Errorf("identities bucket: %w", err)
	}
	batcher := statuscache.NewBatcher(cache, 8192)
	auditor := api.NewEventAuditor(p.JS, "fleetjob/api", p.Log)
	core := api.NewCore(cfg.Token, api.Deps{
		Auth:       api.Auth{Identities: api.IdentityStore{KV: idents}, Networks: cfg.OctansAllow, Rate: cfg.Rate, Burst: cfg.Burst},
		Enrolments: enrolled, Audit: auditor,
		Publisher: api.JetStreamPublisher{JS: p.JS},
		Claims:    claims,
		Jobs:      jobReader{cache}, Search: jobSearch{cache}, Queued: queuer{batcher},
		Logs: logs, Callbacks: callbackReader{cache.JobsBucket()}, DeadLetters: api.KVDeadLetters{KV: dead},
		Agents: dir, Risk: risk, Enrol: enroller, Registry: p.Reg, Log: p.Log, Accounts: accounts,
		SealKey: sealKey,
	})
	srv := api.New(p.Log, p.Reg, map[string]api.Checker{
		"nats": func(ctx context.Context) error {
			_, err := p.JS.AccountInfo(ctx)
			return err
		},
		"redis": func(ctx context.Context) error { return p.RDB.Ping(ctx).Err() },
	}, native.New(core), octans.New(core), bkjob.New(core))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return dir.Run(gctx) })
	g.Go(func() error { return srv.Serve(gctx, ln) })
	g.Go(func() error { return batcher.Run(gctx) })
	g.Go(func() error { return auditor.Run(gctx) })
	err = g.Wait()
	// the names this process accepted are recorded before it goes
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	claims.Wait(wctx)
	return err
}

// openAccounts seeds the accounts bucket's defaults (once per system)
// and watches it for the API.
func openAccounts(ctx context.Context, p Plumbing) (*api.KVAccounts, error) {
	kv, err := p.JS.KeyValue(ctx, schemas.BucketAccounts)
	if err != nil {
		return nil, fmt.Errorf("accounts bucket: %w", err)
	}
	if err := api.SeedAccounts(ctx, kv); err != nil {
		return nil, err
	}
	return api.NewKVAccounts(ctx, kv)
}

// sealing returns the API's curve key (kept in file, or made for this
// process) and the enrolled agents it seals sensitive values to.
func sealing(ctx context.Context, p Plumbing, file string) (nkeys.KeyPair, api.EnrolmentReader, error) {
	kv, err := p.JS.KeyValue(ctx, schemas.BucketEnrolled)
	if err != nil {
		return nil, nil, fmt.Errorf("enrolled bucket: %w", err)
	}
	var kp nkeys.KeyPair
	if file != "" {
		kp, err = api.LoadOrCreateSealKey(file)
	} else {
		kp, err = nkeys.CreateCurveKeys()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("api curve key: %w", err)
	}
	return kp, api.KVEnrolments{KV: kv}, nil
}

// RunAgent runs one agent until ctx ends. Agents of one process share m;
// nil registers new metrics on p.Reg.
func RunAgent(ctx context.Context, p Plumbing, cfg agent.Config, m *agent.Metrics) error {
	if m == nil {
		m = agent.NewMetrics(p.Reg)
	}
	a, err := agent.New(cfg, p.NC, p.JS, m, p.Log)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// RedisClient connects to a Redis URL with the settings of a cache on the
// request path: short timeouts and no retries, so a slow or gone Redis
// costs a read half a second before it is answered from JetStream.
func RedisClient(url string) (redis.UniversalClient, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs: []string{opt.Addr}, DB: opt.DB, Username: opt.Username, Password: opt.Password,
		TLSConfig: opt.TLSConfig, PoolSize: 64,
		DialTimeout: time.Second, DialerRetries: 1,
		ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond, MaxRetries: -1,
	}), nil
}

// RunSimulator runs a load simulator (agent --simulate) until ctx ends.
func RunSimulator(ctx context.Context, p Plumbing, cfg agent.SimConfig) error {
	sim, err := agent.NewSimulator(cfg, p.NC, p.JS, p.Log)
	if err != nil {
		return err
	}
	return sim.Run(ctx)
}
