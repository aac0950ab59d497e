package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/fleetjob/fleetjob/internal/roles"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
)

// agentSettings is the agent.Config of cfg's agent, journaling in dir.
func agentSettings(cfg Config, dir string, top schemas.Topology) agent.Config {
	a := cfg.Agent
	labels, _ := parseLabels(a.Labels) // validated by loadConfig
	id := a.ID
	if id == "" {
		id = defaultAgentID(a.CloudID, a.IP)
	}
	return agent.Config{
		ID: id, IP: a.IP, CloudID: a.CloudID, HostID: a.HostID, Hostname: hostname(), Version: version,
		DataDir: dir, Slots: a.Slots, ShutdownGrace: a.ShutdownGrace, Topology: top, Labels: labels,
	}
}

// apiSettings is the API's configuration, with the admin token in force.
func apiSettings(cfg Config, token string) roles.APIConfig {
	grants, _ := parseGrants(cfg.API.OctansAllow) // validated by loadConfig
	return roles.APIConfig{Token: token, OctansAllow: grants, Rate: float64(cfg.API.Rate), Burst: cfg.API.Burst,
		RiskRules: cfg.API.RiskRules, AgentNATSURLs: strings.Split(cfg.NATS.URL, ",")}
}

// joinPlumbing connects a separate role to the configured NATS and, when
// it needs one, Redis.
func joinPlumbing(ctx context.Context, cfg Config, r role, needRedis bool, log *slog.Logger, opts ...nats.Option) (roles.Plumbing, func(), error) {
	nc, js, err := connectNATS(cfg.NATS.URL, "fleetjob-"+string(r)+"-"+hostname(), log, opts...)
	if err != nil {
		return roles.Plumbing{}, nil, err
	}
	allow, _ := parsePrefixes(cfg.Outbound.Allow) // validated by loadConfig
	p := roles.Plumbing{NC: nc, JS: js, Top: cfg.topology(), Reg: newRegistry(), Log: log, OutboundAllow: allow}
	if err := ensureTopology(ctx, js, p.Top, log); err != nil {
		nc.Close()
		return roles.Plumbing{}, nil, err
	}
	closeRedis := func() {}
	if needRedis {
		if p.RDB, closeRedis, err = openRedis(string(cfg.Redis.URL), log); err != nil {
			nc.Close()
			return roles.Plumbing{}, nil, err
		}
	}
	return p, func() { closeRedis(); nc.Drain() }, nil
}

func runAPI(ctx context.Context, cfg Config, log *slog.Logger) error {
	p, closeAll, err := joinPlumbing(ctx, cfg, roleAPI, true, log)
	if err != nil {
		return err
	}
	defer closeAll()
	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.HTTP.Addr, err)
	}
	log.Info("api listening", "addr", ln.Addr().String())
	return roles.RunAPI(ctx, p, ln, apiSettings(cfg, string(cfg.API.Token)))
}

func runWorker(ctx context.Context, cfg Config, log *slog.Logger) error {
	p, closeAll, err := joinPlumbing(ctx, cfg, roleWorker, true, log)
	if err != nil {
		return err
	}
	defer closeAll()
	name := fmt.Sprintf("%s-%d", hostname(), os.Getpid())
	return runWithMetrics(ctx, cfg.Metrics.Addr, p, func(ctx context.Context) error {
		return roles.RunWorkers(ctx, p, cfg.Workers.Count, name)
	})
}

func runAgent(ctx context.Context, cfg Config, log *slog.Logger) error {
	if cfg.Simulate.Agents == 0 {
		unlock, err := lockDir(cfg.Agent.DataDir, "--data-dir")
		if err != nil {
			return err
		}
		defer unlock()
	}
	if cfg.Enrol.URL != "" {
		if err := enrolAgent(ctx, cfg, log); err != nil {
			return err
		}
		if cfg.Enrol.Only {
			fmt.Printf("agent %s enrolled; its keys and credentials are in %s\n", enrolledAgentID(cfg), cfg.Agent.DataDir)
			return nil
		}
	}
	creds, err := agentCreds(cfg.Agent.DataDir)
	if err != nil {
		return err
	}
	p, closeAll, err := joinPlumbing(ctx, cfg, roleAgent, false, log, creds...)
	if err != nil {
		return err
	}
	defer closeAll()
	acfg := agentSettings(cfg, cfg.Agent.DataDir, p.Top)
	run := func(ctx context.Context) error { return roles.RunAgent(ctx, p, acfg, nil) }
	if sim := cfg.Simulate; sim.Agents > 0 {
		first, _ := netip.ParseAddr(sim.FirstIP) // validated by loadConfig
		run = func(ctx context.Context) error {
			return roles.RunSimulator(ctx, p, agent.SimConfig{Pool: sim.Pool, N: sim.Agents, FirstIP: first,
				CloudID: cfg.Agent.CloudID, Topology: p.Top, Version: version})
		}
	}
	return runWithMetrics(ctx, cfg.Metrics.Addr, p, run)
}

// runWithMetrics runs a role's part beside its /metrics server (none when
// addr is empty) until ctx ends or either fails.
func runWithMetrics(ctx context.Context, addr string, p roles.Plumbing, part func(context.Context) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveMetrics(gctx, addr, p.Reg) })
	g.Go(func() error { return part(gctx) })
	return g.Wait()
}
