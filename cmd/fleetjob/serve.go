package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/fleetjob/fleetjob/internal/natsrv"
	"github.com/fleetjob/fleetjob/internal/roles"
	"github.com/fleetjob/fleetjob/schemas"
)

func serveCmd(logger func() *slog.Logger) *cobra.Command {
	var (
		httpAddr, natsAddr, dataDir string
		workers                     int
		sync                        time.Duration
		syncAlways, noAgent         bool
		af                          agentFlags
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run everything in one process: embedded NATS JetStream, API, workers and an agent for this machine",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log := logger()
			if err := os.MkdirAll(dataDir, 0o700); err != nil {
				return fmt.Errorf("data dir: %w", err)
			}
			ns, err := natsrv.Start(natsrv.Config{
				Addr: natsAddr, StoreDir: filepath.Join(dataDir, "nats"),
				SyncInterval: sync, SyncAlways: syncAlways, Name: "fleetjob-" + hostname(),
			})
			if err != nil {
				return fmt.Errorf("embedded nats on %s (choose another with --nats-addr): %w", natsAddr, err)
			}
			defer ns.Shutdown()
			natsURL := ns.ClientURL()
			nc, js, err := connectNATS(natsURL, "fleetjob-serve", log)
			if err != nil {
				return err
			}
			defer nc.Drain()
			top, err := schemas.DefaultTopology().FromEnv()
			if err != nil {
				return err
			}
			if err := ensureTopology(ctx, js, top, log); err != nil {
				return err
			}
			rdb, closeRedis, err := openRedis(os.Getenv("REDIS_URL"), log)
			if err != nil {
				return err
			}
			defer closeRedis()
			token, generated, err := adminToken(dataDir)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", httpAddr)
			if err != nil {
				return fmt.Errorf("listen %s (choose another with --http-addr): %w", httpAddr, err)
			}
			p := roles.Plumbing{NC: nc, JS: js, RDB: rdb, Top: top, Reg: newRegistry(), Log: log}
			acfg, err := af.config(filepath.Join(dataDir, "agent"), top)
			if err != nil {
				return err
			}
			printBanner(ln.Addr().String(), natsURL, token, generated, dataDir, acfg.IP, noAgent)

			g, gctx := errgroup.WithContext(ctx)
			g.Go(func() error {
				return roles.RunAPI(gctx, p, ln, roles.APIConfig{Token: token, CompatToken: os.Getenv("FLEETJOB_COMPAT_TOKEN"), RiskRules: os.Getenv("FLEETJOB_RISK_RULES")})
			})
			g.Go(func() error { return roles.RunWorkers(gctx, p, workers, "serve-"+hostname()) })
			if !noAgent {
				g.Go(func() error { return roles.RunAgent(gctx, p, acfg, nil) })
			}
			err = g.Wait()
			log.Info("fleetjob stopped")
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&httpAddr, "http-addr", envOr("FLEETJOB_HTTP_ADDR", "127.0.0.1:8080"), "HTTP listen address")
	fl.StringVar(&natsAddr, "nats-addr", envOr("FLEETJOB_NATS_ADDR", "127.0.0.1:4233"), "embedded NATS listen address; remote agents and workers join here")
	fl.StringVar(&dataDir, "data-dir", envOr("FLEETJOB_DATA_DIR", "./data"), "JetStream store, agent journal and admin token")
	fl.IntVar(&workers, "workers", 2, "workers in this process")
	fl.DurationVar(&sync, "nats-sync", 0, "JetStream fsync interval (0: the server's default, 2m)")
	fl.BoolVar(&syncAlways, "nats-sync-always", false, "fsync JetStream on every write (safest, slowest)")
	fl.BoolVar(&noAgent, "no-agent", false, "do not run an agent for this machine")
	af.bind(cmd, "agent-", "127.0.0.1")
	return cmd
}

func printBanner(httpAddr, natsURL, token string, generated bool, dataDir, agentIP string, noAgent bool) {
	tokenNote := "(from FLEETJOB_TOKEN or " + filepath.Join(dataDir, "admin.token") + ")"
	if generated {
		tokenNote = "(generated; saved in " + filepath.Join(dataDir, "admin.token") + ")"
	}
	fmt.Printf(`
fleetjob is running
  API             http://%[1]s      (GET /healthz, /readyz, /metrics)
  NATS            %[2]s   (remote agents: NATS_URL=%[2]s fleetjob agent)
  admin token     %[3]s %[4]s
  agent           %[5]s

Try:
  export TOKEN=%[3]s
  curl -s -H "Authorization: Bearer $TOKEN" -X POST http://%[1]s/v1/jobs \
    -d '{"name":"hello","targets":["%[6]s"],"steps":[{"script":{"content":"echo hello from $(hostname)"}}]}'
  curl -s -H "Authorization: Bearer $TOKEN" http://%[1]s/v1/jobs

`, httpAddr, natsURL, token, tokenNote, map[bool]string{true: "none (--no-agent)", false: "this machine as " + agentIP}[noAgent], agentIP)
}
