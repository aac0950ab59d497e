package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/fleetjob/fleetjob/internal/natsrv"
	"github.com/fleetjob/fleetjob/internal/roles"
	"github.com/fleetjob/fleetjob/schemas"
)

// runServe runs everything in one process on cfg.DataDir, which it holds
// locked until it returns.
func runServe(ctx context.Context, cfg Config, log *slog.Logger) error {
	unlock, err := lockDir(cfg.DataDir, "--data-dir")
	if err != nil {
		return err
	}
	defer unlock()
	agentDir := filepath.Join(cfg.DataDir, "agent")
	if !cfg.Agent.Disabled {
		// an agent role pointed at the built-in agent's journal is refused too
		unlockAgent, err := lockDir(agentDir, "--data-dir")
		if err != nil {
			return err
		}
		defer unlockAgent()
	}
	ns, err := natsrv.Start(natsrv.Config{
		Addr: cfg.NATS.Addr, StoreDir: filepath.Join(cfg.DataDir, "nats"),
		SyncInterval: cfg.NATS.Sync, SyncAlways: cfg.NATS.SyncAlways, Name: "fleetjob-" + hostname(),
	})
	if err != nil {
		return fmt.Errorf("embedded nats on %s (choose another with --nats-addr): %w", cfg.NATS.Addr, err)
	}
	defer ns.Shutdown()
	natsURL := ns.ClientURL()
	nc, js, err := connectNATS(natsURL, "fleetjob-serve", log)
	if err != nil {
		return err
	}
	defer nc.Drain()
	top := cfg.topology()
	if err := ensureTopology(ctx, js, top, log); err != nil {
		return err
	}
	rdb, closeRedis, err := openRedis(string(cfg.Redis.URL), log)
	if err != nil {
		return err
	}
	defer closeRedis()
	token, generated, err := adminToken(cfg.DataDir, string(cfg.API.Token))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("listen %s (choose another with --http-addr): %w", cfg.HTTP.Addr, err)
	}
	allow, _ := parsePrefixes(cfg.Outbound.Allow) // validated by loadConfig
	p := roles.Plumbing{NC: nc, JS: js, RDB: rdb, Top: top, Reg: newRegistry(), Log: log, OutboundAllow: allow}
	acfg := agentSettings(cfg, agentDir, top)
	if !cfg.Agent.Disabled {
		// enrolled like any agent, so the registry accepts its host
		err := p.EnrolLocal(ctx, nil, []string{natsURL}, roles.LocalAgent{ID: acfg.ID, Host: schemas.Host{CloudID: acfg.CloudID, IP: acfg.IP}, HostID: acfg.HostID,
			Hostname: acfg.Hostname, DataDir: agentDir, Slots: acfg.Slots})
		if err != nil {
			return err
		}
	}
	printBanner(ln.Addr().String(), natsURL, token, generated, cfg.API.Token != "", cfg.DataDir, acfg.IP, cfg.Agent.Disabled)

	g, gctx := errgroup.WithContext(ctx)
	apiCfg := apiSettings(cfg, token)
	apiCfg.SealKeyFile = filepath.Join(cfg.DataDir, "keys", "api-curve.xk") // seals sensitive values to agents
	apiCfg.AgentNATSURLs = []string{natsURL}
	g.Go(func() error { return roles.RunAPI(gctx, p, ln, apiCfg) })
	g.Go(func() error { return roles.RunWorkers(gctx, p, cfg.Workers.Count, "serve-"+hostname()) })
	if !cfg.Agent.Disabled {
		g.Go(func() error { return roles.RunAgent(gctx, p, acfg, nil) })
	}
	err = g.Wait()
	log.Info("fleetjob stopped")
	return err
}

// printBanner says where everything is. The admin token is shown once,
// the start that generates it; later starts say where it is kept.
func printBanner(httpAddr, natsURL, token string, generated, configured bool, dataDir, agentIP string, noAgent bool) {
	fmt.Print(banner(httpAddr, natsURL, token, generated, configured, dataDir, agentIP, noAgent))
}

func banner(httpAddr, natsURL, token string, generated, configured bool, dataDir, agentIP string, noAgent bool) string {
	path := filepath.Join(dataDir, "admin.token")
	tokenLine, export := "kept in "+path+" (0600; shown only when generated)", "$(cat "+path+")"
	switch {
	case generated:
		tokenLine = token + "   (generated now and saved in " + path + "; it is not shown again)"
	case configured:
		tokenLine, export = "from FLEETJOB_TOKEN or api.token", "<your admin token>"
	}
	return fmt.Sprintf(`
fleetjob is running
  API             http://%[1]s      (GET /healthz, /readyz, /metrics)
  NATS            %[2]s   (remote agents: NATS_URL=%[2]s fleetjob agent)
  admin token     %[3]s
  agent           %[4]s

Try:
  export TOKEN=%[5]s
  curl -s -H "Authorization: Bearer $TOKEN" -X POST http://%[1]s/v1/jobs \
    -d '{"name":"hello","targets":["%[6]s"],"steps":[{"script":{"content":"echo hello from $(hostname)"}}]}'
  curl -s -H "Authorization: Bearer $TOKEN" http://%[1]s/v1/jobs

`, httpAddr, natsURL, tokenLine, map[bool]string{true: "none (--no-agent)", false: "this machine as " + agentIP}[noAgent], export, agentIP)
}
