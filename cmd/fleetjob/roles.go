package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
	"github.com/fleetjob/fleetjob/workers/logindex"
	"github.com/fleetjob/fleetjob/workers/orchestrator"
	"github.com/fleetjob/fleetjob/workers/registry"
	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// agentTTL is how long an agent counts as online after its last heartbeat.
const agentTTL = 15 * time.Second

// plumbing is what every role shares.
type plumbing struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	rdb redis.UniversalClient
	top schemas.Topology
	reg *prometheus.Registry
	log *slog.Logger
}

func (p plumbing) cache(ctx context.Context) (*statuscache.Cache, error) {
	kv, err := p.js.KeyValue(ctx, schemas.BucketJobs)
	if err != nil {
		return nil, fmt.Errorf("jobs bucket: %w", err)
	}
	cmds, err := p.js.Stream(ctx, schemas.StreamJobs)
	if err != nil {
		return nil, fmt.Errorf("jobs stream: %w", err)
	}
	return statuscache.New(p.rdb, kv, cmds, p.log), nil
}

func (p plumbing) registry(ctx context.Context) (*registry.Registry, error) {
	kv, err := p.js.KeyValue(ctx, schemas.BucketAgents)
	if err != nil {
		return nil, fmt.Errorf("agents bucket: %w", err)
	}
	return registry.New(kv, agentTTL), nil
}

// runWorkers runs n workers and one log indexer until ctx ends.
func runWorkers(ctx context.Context, p plumbing, n int, name string) error {
	cache, err := p.cache(ctx)
	if err != nil {
		return err
	}
	dir, err := p.registry(ctx)
	if err != nil {
		return err
	}
	m := orchestrator.NewMetrics(p.reg)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return dir.Run(gctx) })
	select {
	case <-dir.Ready():
	case <-gctx.Done():
		return g.Wait()
	}
	if err := cache.EnsureBuilt(ctx); err != nil {
		p.log.Warn("status cache not rebuilt at start; it will be on first read", "err", err)
	}
	g.Go(func() error { return logindex.NewIndexer(p.js, p.rdb, p.top, p.log).Run(gctx) })
	for i := 0; i < n; i++ {
		w, err := orchestrator.New(ctx, orchestrator.Config{Name: fmt.Sprintf("%s-%d", name, i), Topology: p.top}, p.nc, p.js, dir, cache, m, p.log)
		if err != nil {
			return err
		}
		g.Go(func() error { return w.Run(gctx) })
	}
	return g.Wait()
}

// runAPI serves the HTTP API on ln until ctx ends.
func runAPI(ctx context.Context, p plumbing, ln net.Listener, cfg api.Config) error {
	cache, err := p.cache(ctx)
	if err != nil {
		return err
	}
	dir, err := p.registry(ctx)
	if err != nil {
		return err
	}
	names, err := p.js.KeyValue(ctx, schemas.BucketNames)
	if err != nil {
		return fmt.Errorf("names bucket: %w", err)
	}
	logs, err := logindex.NewReader(ctx, p.js, p.rdb, p.log)
	if err != nil {
		return err
	}
	srv := api.New(cfg, api.Deps{
		Publisher: api.JetStreamPublisher{JS: p.js},
		Claims:    api.KVClaims{KV: names},
		Cache:     cache, Logs: logs, Agents: dir, Registry: p.reg, Log: p.log,
		Checks: map[string]api.Checker{
			"nats": func(ctx context.Context) error {
				_, err := p.js.AccountInfo(ctx)
				return err
			},
			"redis": func(ctx context.Context) error { return p.rdb.Ping(ctx).Err() },
		},
	})
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return dir.Run(gctx) })
	g.Go(func() error { return srv.Serve(gctx, ln) })
	return g.Wait()
}

// agentFlags are the flags that describe an agent.
type agentFlags struct {
	id, ip, dataDir string
	cloud           int64
	labels          []string
	slots           int
	grace           time.Duration
}

func (f *agentFlags) bind(cmd *cobra.Command, prefix, defIP string) {
	fl := cmd.Flags()
	fl.StringVar(&f.id, prefix+"id", "", "agent id (default: hostname-ip)")
	fl.StringVar(&f.ip, prefix+"ip", defIP, "IP address of the host this agent serves")
	fl.Int64Var(&f.cloud, prefix+"cloud-id", 0, "cloud area id of the host")
	fl.StringArrayVar(&f.labels, prefix+"label", nil, "label k=v (repeatable)")
	fl.IntVar(&f.slots, prefix+"slots", 64, "tasks run at once")
	fl.DurationVar(&f.grace, prefix+"shutdown-grace", 10*time.Second, "time running scripts get to finish on shutdown")
}

func (f *agentFlags) config(dataDir string, top schemas.Topology) (agent.Config, error) {
	cfg := agent.Config{
		ID: f.id, IP: f.ip, CloudID: f.cloud, Hostname: hostname(), Version: version,
		DataDir: dataDir, Slots: f.slots, ShutdownGrace: f.grace, Topology: top,
		Labels: map[string]string{},
	}
	if cfg.ID == "" {
		cfg.ID = defaultAgentID(f.cloud, f.ip)
	}
	for _, l := range f.labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return cfg, fmt.Errorf("label %q: want k=v", l)
		}
		cfg.Labels[k] = v
	}
	return cfg, nil
}

func runAgent(ctx context.Context, p plumbing, cfg agent.Config) error {
	a, err := agent.New(cfg, p.nc, p.js, agent.NewMetrics(p.reg), p.log)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// joinPlumbing connects a separate role to NATS_URL and REDIS_URL.
func joinPlumbing(ctx context.Context, role string, needRedis bool, log *slog.Logger) (plumbing, func(), error) {
	natsURL := envOr("NATS_URL", nats.DefaultURL)
	nc, js, err := connectNATS(natsURL, "fleetjob-"+role+"-"+hostname(), log)
	if err != nil {
		return plumbing{}, nil, err
	}
	p := plumbing{nc: nc, js: js, top: topologyFromEnv(), reg: newRegistry(), log: log}
	if err := ensureTopology(ctx, js, p.top); err != nil {
		nc.Close()
		return plumbing{}, nil, err
	}
	closeRedis := func() {}
	if needRedis {
		url := os.Getenv("REDIS_URL")
		if url == "" {
			nc.Close()
			return plumbing{}, nil, fmt.Errorf("REDIS_URL is required by the %s role", role)
		}
		if p.rdb, closeRedis, err = openRedis(url, log); err != nil {
			nc.Close()
			return plumbing{}, nil, err
		}
	}
	return p, func() { closeRedis(); nc.Drain() }, nil
}

// topologyFromEnv reads FLEETJOB_REPLICAS (1 embedded, 3 in a cluster).
func topologyFromEnv() schemas.Topology {
	top := schemas.DefaultTopology()
	if v := os.Getenv("FLEETJOB_REPLICAS"); v != "" {
		fmt.Sscan(v, &top.Replicas)
	}
	return top
}

func apiCmd(logger func() *slog.Logger) *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "api",
		Short: "Serve the HTTP API (joins NATS_URL and REDIS_URL)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := logger()
			token := os.Getenv("FLEETJOB_TOKEN")
			if token == "" {
				return fmt.Errorf("FLEETJOB_TOKEN is required by the api role")
			}
			p, closeAll, err := joinPlumbing(cmd.Context(), "api", true, log)
			if err != nil {
				return err
			}
			defer closeAll()
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen %s: %w", addr, err)
			}
			log.Info("api listening", "addr", ln.Addr().String())
			return runAPI(cmd.Context(), p, ln, api.Config{Token: token, CompatToken: os.Getenv("FLEETJOB_COMPAT_TOKEN")})
		},
	}
	cmd.Flags().StringVar(&addr, "http-addr", envOr("FLEETJOB_HTTP_ADDR", "127.0.0.1:8080"), "HTTP listen address (/metrics is served here)")
	return cmd
}

func workerCmd(logger func() *slog.Logger) *cobra.Command {
	var n int
	var metricsAddr string
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run workers that drive jobs (joins NATS_URL and REDIS_URL)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := logger()
			p, closeAll, err := joinPlumbing(cmd.Context(), "worker", true, log)
			if err != nil {
				return err
			}
			defer closeAll()
			g, gctx := errgroup.WithContext(cmd.Context())
			g.Go(func() error { return serveMetrics(gctx, metricsAddr, p.reg) })
			g.Go(func() error { return runWorkers(gctx, p, n, fmt.Sprintf("%s-%d", hostname(), os.Getpid())) })
			return g.Wait()
		},
	}
	cmd.Flags().IntVar(&n, "workers", 1, "workers in this process")
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "", "serve /metrics here (off when empty)")
	return cmd
}

func agentCmd(logger func() *slog.Logger) *cobra.Command {
	var af agentFlags
	var metricsAddr string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the agent of this host (needs only NATS_URL)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := logger()
			p, closeAll, err := joinPlumbing(cmd.Context(), "agent", false, log)
			if err != nil {
				return err
			}
			defer closeAll()
			cfg, err := af.config(af.dataDir, p.top)
			if err != nil {
				return err
			}
			g, gctx := errgroup.WithContext(cmd.Context())
			g.Go(func() error { return serveMetrics(gctx, metricsAddr, p.reg) })
			g.Go(func() error { return runAgent(gctx, p, cfg) })
			return g.Wait()
		},
	}
	af.bind(cmd, "", primaryIP())
	cmd.Flags().StringVar(&af.dataDir, "data-dir", envOr("FLEETJOB_AGENT_DIR", "./data/agent"), "journal and script directory")
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "", "serve /metrics here (off when empty)")
	return cmd
}
