package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/fleetjob/fleetjob/internal/roles"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
)

// agentFlags are the flags that describe an agent.
type agentFlags struct {
	id, ip, dataDir string
	cloud, hostID   int64
	labels          []string
	slots           int
	grace           time.Duration
}

func (f *agentFlags) bind(cmd *cobra.Command, prefix, defIP string) {
	fl := cmd.Flags()
	fl.StringVar(&f.id, prefix+"id", "", "agent id (default: hostname-ip)")
	fl.StringVar(&f.ip, prefix+"ip", defIP, "IP address of the host this agent serves")
	fl.Int64Var(&f.cloud, prefix+"cloud-id", 0, "cloud area id of the host")
	fl.Int64Var(&f.hostID, prefix+"host-id", 0, "the host's numeric id in your CMDB (BlueKing bk_host_id), if any")
	fl.StringArrayVar(&f.labels, prefix+"label", nil, "label k=v (repeatable)")
	fl.IntVar(&f.slots, prefix+"slots", 64, "tasks run at once")
	fl.DurationVar(&f.grace, prefix+"shutdown-grace", 10*time.Second, "time running scripts get to finish on shutdown")
}

func (f *agentFlags) config(dataDir string, top schemas.Topology) (agent.Config, error) {
	cfg := agent.Config{
		ID: f.id, IP: f.ip, CloudID: f.cloud, HostID: f.hostID, Hostname: hostname(), Version: version,
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

// joinPlumbing connects a separate role to NATS_URL and REDIS_URL.
func joinPlumbing(ctx context.Context, role string, needRedis bool, log *slog.Logger) (roles.Plumbing, func(), error) {
	natsURL := envOr("NATS_URL", nats.DefaultURL)
	nc, js, err := connectNATS(natsURL, "fleetjob-"+role+"-"+hostname(), log)
	if err != nil {
		return roles.Plumbing{}, nil, err
	}
	top, err := schemas.DefaultTopology().FromEnv()
	if err != nil {
		nc.Close()
		return roles.Plumbing{}, nil, err
	}
	p := roles.Plumbing{NC: nc, JS: js, Top: top, Reg: newRegistry(), Log: log}
	if err := ensureTopology(ctx, js, p.Top, log); err != nil {
		nc.Close()
		return roles.Plumbing{}, nil, err
	}
	closeRedis := func() {}
	if needRedis {
		url := os.Getenv("REDIS_URL")
		if url == "" {
			nc.Close()
			return roles.Plumbing{}, nil, fmt.Errorf("REDIS_URL is required by the %s role", role)
		}
		if p.RDB, closeRedis, err = openRedis(url, log); err != nil {
			nc.Close()
			return roles.Plumbing{}, nil, err
		}
	}
	return p, func() { closeRedis(); nc.Drain() }, nil
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
			return roles.RunAPI(cmd.Context(), p, ln, roles.APIConfig{Token: token, CompatToken: os.Getenv("FLEETJOB_COMPAT_TOKEN"), RiskRules: os.Getenv("FLEETJOB_RISK_RULES")})
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
			g.Go(func() error { return serveMetrics(gctx, metricsAddr, p.Reg) })
			g.Go(func() error { return roles.RunWorkers(gctx, p, n, fmt.Sprintf("%s-%d", hostname(), os.Getpid())) })
			return g.Wait()
		},
	}
	cmd.Flags().IntVar(&n, "workers", 1, "workers in this process")
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "", "serve /metrics here (off when empty)")
	return cmd
}

func agentCmd(logger func() *slog.Logger) *cobra.Command {
	var af agentFlags
	var metricsAddr, simPool, simFirstIP string
	var simulate int
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
			cfg, err := af.config(af.dataDir, p.Top)
			if err != nil {
				return err
			}
			g, gctx := errgroup.WithContext(cmd.Context())
			g.Go(func() error { return serveMetrics(gctx, metricsAddr, p.Reg) })
			if simulate > 0 {
				first, err := netip.ParseAddr(simFirstIP)
				if err != nil {
					return fmt.Errorf("--sim-first-ip: %w", err)
				}
				g.Go(func() error {
					return roles.RunSimulator(gctx, p, agent.SimConfig{Pool: simPool, N: simulate, FirstIP: first,
						CloudID: af.cloud, Topology: p.Top, Version: version})
				})
				return g.Wait()
			}
			g.Go(func() error { return roles.RunAgent(gctx, p, cfg, nil) })
			return g.Wait()
		},
	}
	af.bind(cmd, "", primaryIP())
	cmd.Flags().StringVar(&af.dataDir, "data-dir", envOr("FLEETJOB_AGENT_DIR", "./data/agent"), "journal and script directory")
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "", "serve /metrics here (off when empty)")
	cmd.Flags().IntVar(&simulate, "simulate", 0, "LOAD TOOL: serve this many simulated agents that finish every task at once, instead of a real agent")
	cmd.Flags().StringVar(&simPool, "sim-pool", "sim", "with --simulate: the task pool and id prefix of the simulated agents")
	cmd.Flags().StringVar(&simFirstIP, "sim-first-ip", "10.200.0.1", "with --simulate: the IP of the first simulated agent; the others follow")
	return cmd
}
