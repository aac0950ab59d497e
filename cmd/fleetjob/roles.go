package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/fleetjob/fleetjob/internal/agentkeys"
	"github.com/fleetjob/fleetjob/internal/natsauth"
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
// Each role connects with its own credentials (nats.creds); agents and
// simulators with the inbox prefix their permissions allow. Streams are
// the admin's to create: the API and workers wait for them.
func joinPlumbing(ctx context.Context, cfg Config, r role, needRedis bool, log *slog.Logger) (roles.Plumbing, func(), error) {
	creds := cfg.NATS.Creds
	if creds == "" && r == roleAgent {
		var err error // where enrolment keeps them, if only their owner may read them
		if creds, err = agentkeys.Creds(cfg.Agent.DataDir); err != nil {
			return roles.Plumbing{}, nil, err
		}
	}
	if _, err := os.Stat(creds); creds == "" || err != nil {
		return roles.Plumbing{}, nil, fmt.Errorf("no NATS credentials for the %s role (%q): pass --nats-creds or FLEETJOB_NATS_CREDS (fleetjob nats-auth init writes the services'; an agent gets its own by enrolling: fleetjob agent --enrol URL --token T)", r, creds)
	}
	auth := []nats.Option{nats.UserCredentials(creds)}
	if cfg.NATS.TLSCA != "" {
		auth = append(auth, nats.RootCAs(cfg.NATS.TLSCA))
	}
	if cfg.NATS.TLSCert != "" {
		auth = append(auth, nats.ClientCert(cfg.NATS.TLSCert, cfg.NATS.TLSKey))
	}
	if r == roleAgent {
		prefix := natsauth.AgentInboxPrefix(agentSettings(cfg, cfg.Agent.DataDir, cfg.topology()).ID)
		if cfg.Simulate.Agents > 0 {
			prefix = natsauth.SimulatorInboxPrefix(cfg.Simulate.Pool)
		}
		auth = append(auth, nats.CustomInboxPrefix(prefix))
	}
	nc, js, err := connectNATS(cfg.NATS.URL, "fleetjob-"+string(r)+"-"+hostname(), log, auth...)
	if err != nil {
		if r == roleAgent && cfg.Simulate.Agents == 0 && agent.AuthRefused(err) {
			// revoked before this start: as final as a revocation seen live
			return roles.Plumbing{}, nil, fmt.Errorf("%w: %w", err, agent.ErrRevoked)
		}
		return roles.Plumbing{}, nil, err
	}
	allow, _ := parsePrefixes(cfg.Outbound.Allow) // validated by loadConfig
	p := roles.Plumbing{NC: nc, JS: js, Top: cfg.topology(), Reg: newRegistry(), Log: log, OutboundAllow: allow,
		CacheRetention: cfg.cacheRetention(), SpecCache: cfg.Workers.SpecCache, CreateWindow: cfg.createWindow()}
	if r != roleAgent { // an agent may read no stream's info
		if err := awaitTopology(ctx, js, p.Top, log); err != nil {
			nc.Close()
			return roles.Plumbing{}, nil, err
		}
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
	ln, err := listenHTTP(cfg)
	if err != nil {
		return err
	}
	acfg := apiSettings(cfg, string(cfg.API.Token))
	if dir := cfg.NATS.AuthDir; dir != "" {
		// the API holds the authority: it signs enrolling agents' JWTs and
		// pushes revocations over a system-account connection of its own
		auth, err := natsauth.Load(dir)
		if err != nil {
			return err
		}
		sys, err := auth.ServiceCreds(natsauth.RoleSystem, "fleetjob-api-system-"+hostname())
		if err != nil {
			return err
		}
		snc, _, err := connectNATS(cfg.NATS.URL, "fleetjob-api-system-"+hostname(), log, sys.Option())
		if err != nil {
			return err
		}
		defer snc.Drain()
		auth.UsePushConnection(snc)
		acfg.Issuer = roles.AuthorityIssuer{Auth: auth, JS: p.JS, Top: p.Top}
	}
	log.Info("api listening", "addr", ln.Addr().String(), "issues_agent_credentials", acfg.Issuer != nil)
	return roles.RunAPI(ctx, p, ln, acfg)
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
	p, closeAll, err := joinPlumbing(ctx, cfg, roleAgent, false, log)
	if err != nil {
		return revokedHint(cfg, err)
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
	return revokedHint(cfg, runWithMetrics(ctx, cfg.Metrics.Addr, p, run))
}

// revokedHint adds to a revoked agent's error what its data dir must lose
// before it can enrol again: the revoked key, and the record that makes
// --enrol a no-op.
func revokedHint(cfg Config, err error) error {
	if !errors.Is(err, agent.ErrRevoked) || cfg.Simulate.Agents > 0 {
		return err
	}
	dir := cfg.Agent.DataDir
	return fmt.Errorf("%w, after moving %s and %s away (a revoked key cannot enrol again)", err,
		filepath.Join(dir, enrolledFile), filepath.Join(dir, agentkeys.Dir))
}

// runWithMetrics runs a role's part beside its /metrics server (none when
// addr is empty) until ctx ends or either fails.
func runWithMetrics(ctx context.Context, addr string, p roles.Plumbing, part func(context.Context) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveMetrics(gctx, addr, p.Reg) })
	g.Go(func() error { return part(gctx) })
	return g.Wait()
}
