package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/internal/natsrv"
	"github.com/fleetjob/fleetjob/internal/roles"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
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
	auth, err := natsauth.LoadOrCreate(filepath.Join(cfg.DataDir, "nats-auth"))
	if err != nil {
		return err
	}
	sa, err := auth.ServerAuth()
	if err != nil {
		return err
	}
	ns, err := natsrv.Start(natsrv.Config{
		Addr: cfg.NATS.Addr, StoreDir: filepath.Join(cfg.DataDir, "nats"),
		SyncInterval: cfg.NATS.Sync, SyncAlways: cfg.NATS.SyncAlways, Name: "fleetjob-" + hostname(),
		Auth: sa, TLS: natsrv.TLSFiles{Cert: cfg.NATS.TLSCert, Key: cfg.NATS.TLSKey, CA: cfg.NATS.TLSCA},
	})
	if err != nil {
		return fmt.Errorf("embedded nats on %s (choose another with --nats-addr): %w", cfg.NATS.Addr, err)
	}
	defer ns.Shutdown()
	natsURL := ns.ClientURL()
	// each role its own identity and connection, made in memory
	conns := &serveConns{auth: auth, url: natsURL, log: log}
	if cfg.NATS.TLSCert != "" {
		// with TLS (and perhaps mTLS) on, serve's own roles connect in
		// process: no certificate of their own, no network
		conns.inProcess = ns
	}
	defer conns.close()
	adm, err := conns.service(natsauth.RoleAdmin)
	if err != nil {
		return err
	}
	top := cfg.topology()
	if err := ensureTopology(ctx, adm.JS, top, log); err != nil {
		return err
	}
	sys, err := conns.service(natsauth.RoleSystem)
	if err != nil {
		return err
	}
	auth.UsePushConnection(sys.NC)
	api, err := conns.service(natsauth.RoleAPI)
	if err != nil {
		return err
	}
	wrk, err := conns.service(natsauth.RoleWorker)
	if err != nil {
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
	ln, err := listenHTTP(cfg)
	if err != nil {
		return err
	}
	allow, _ := parsePrefixes(cfg.Outbound.Allow) // validated by loadConfig
	p := roles.Plumbing{RDB: rdb, Top: top, Reg: newRegistry(), Log: log, OutboundAllow: allow, CacheRetention: cfg.cacheRetention(),
		SpecCache: cfg.Workers.SpecCache, CreateWindow: cfg.createWindow()}
	apiP, wrkP, agentP := p, p, p
	apiP.NC, apiP.JS = api.NC, api.JS
	wrkP.NC, wrkP.JS = wrk.NC, wrk.JS
	acfg := agentSettings(cfg, agentDir, top)
	issuer := roles.AuthorityIssuer{Auth: auth, JS: api.JS, Top: top}
	if !cfg.Agent.Disabled {
		// enrolled like any agent, so the registry accepts its host; its
		// credentials are issued by serve's NATS authority
		err := apiP.EnrolLocal(ctx, issuer, []string{natsURL}, roles.LocalAgent{ID: acfg.ID, Host: schemas.Host{CloudID: acfg.CloudID, IP: acfg.IP}, HostID: acfg.HostID,
			Hostname: acfg.Hostname, DataDir: agentDir, Slots: acfg.Slots})
		if err != nil {
			return err
		}
		ag, err := conns.agent(acfg.ID, agentDir)
		if err != nil {
			return err
		}
		agentP.NC, agentP.JS = ag.NC, ag.JS
	}
	printBanner(httpBase(cfg, ln), natsURL, token, generated, cfg.API.Token != "", cfg.DataDir, acfg.IP, cfg.Agent.Disabled)

	g, gctx := errgroup.WithContext(ctx)
	apiCfg := apiSettings(cfg, token)
	apiCfg.SealKeyFile = filepath.Join(cfg.DataDir, "keys", "api-curve.xk") // seals sensitive values to agents
	apiCfg.AgentNATSURLs = []string{natsURL}
	apiCfg.Issuer = issuer
	g.Go(func() error { return roles.RunAPI(gctx, apiP, ln, apiCfg) })
	g.Go(func() error {
		return roles.RunWorkers(gctx, wrkP, cfg.Workers.Count, fmt.Sprintf("serve-%s-%d", hostname(), os.Getpid()))
	})
	if !cfg.Agent.Disabled {
		g.Go(func() error {
			err := roles.RunAgent(gctx, agentP, acfg, nil)
			if errors.Is(err, agent.ErrRevoked) {
				// the rest of the system serves on; remote agents still work
				log.Error("the built-in agent was revoked and has stopped; serve runs on without it (its next start needs another --agent-id, or --no-agent)",
					"agent", acfg.ID, "err", err)
				return nil
			}
			return err
		})
	}
	err = g.Wait()
	log.Info("fleetjob stopped")
	return err
}

// printBanner says where everything is. The admin token is shown once,
// the start that generates it; later starts say where it is kept.
func printBanner(apiURL, natsURL, token string, generated, configured bool, dataDir, agentIP string, noAgent bool) {
	fmt.Print(banner(apiURL, natsURL, token, generated, configured, dataDir, agentIP, noAgent))
}

func banner(apiURL, natsURL, token string, generated, configured bool, dataDir, agentIP string, noAgent bool) string {
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
  API             %[1]s      (GET /healthz, /readyz, /metrics)
  NATS            %[2]s   (authenticated; keys in %[7]s, remote agents enrol)
  admin token     %[3]s
  agent           %[4]s

Try:
  export TOKEN=%[5]s
  curl -s -H "Authorization: Bearer $TOKEN" -X POST %[1]s/v1/jobs \
    -d '{"name":"hello","targets":["%[6]s"],"steps":[{"script":{"content":"echo hello from $(hostname)"}}]}'
  curl -s -H "Authorization: Bearer $TOKEN" %[1]s/v1/jobs

`, apiURL, natsURL, tokenLine, map[bool]string{true: "none (--no-agent)", false: "this machine as " + agentIP}[noAgent], export, agentIP,
		filepath.Join(dataDir, "nats-auth"))
}
