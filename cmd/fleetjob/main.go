// Command fleetjob is the one binary of fleetjob: the all-in-one server,
// the api, worker and agent roles, and their shared plumbing.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fleetjob/fleetjob/internal/memtrim"
	"github.com/fleetjob/fleetjob/workers/agent"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := newRoot(os.Environ()).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "fleetjob:", err)
		os.Exit(exitCode(err))
	}
}

// exitRevoked is the exit status of an agent whose credentials NATS
// refuses (sysexits' EX_NOPERM): restarting it cannot help, so a
// supervisor can tell it apart (systemd: RestartPreventExitStatus=77).
const exitRevoked = 77

// exitCode is the exit status for err: exitRevoked for a refused agent,
// else 1.
func exitCode(err error) int {
	if errors.Is(err, agent.ErrRevoked) {
		return exitRevoked
	}
	return 1
}

// newRoot builds the command tree; environ is the environment the roles
// read their settings from.
func newRoot(environ []string) *cobra.Command {
	root := &cobra.Command{
		Use:           "fleetjob",
		Short:         "A job system for fleets of hosts: scripts, files and deploys over NATS JetStream",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	pf := root.PersistentFlags()
	bindFlags(pf, "", rootFlags)
	pf.String("config", "", "YAML file of settings; the environment and flags override it (env "+configEnv+")")
	agentCmd := roleCmd(roleAgent, "Run the agent of this host (needs only NATS_URL; --enrol <api-url> --token <t> enrols it first)", environ, runAgent)
	agentCmd.AddCommand(revokeCmd(environ))
	root.AddCommand(
		roleCmd(roleServe, "Run everything in one process: embedded NATS JetStream, API, workers and an agent for this machine", environ, runServe),
		roleCmd(roleAPI, "Serve the HTTP API (joins NATS_URL and REDIS_URL)", environ, runAPI),
		roleCmd(roleWorker, "Run workers that drive jobs (joins NATS_URL and REDIS_URL)", environ, runWorker),
		agentCmd,
		enrolmentCmd(environ),
		natsdCmd(),
		accountCmd(environ),
		tokenCmd(environ),
		bkAppCmd(environ),
		natsAuthCmd(),
	)
	return root
}

// roleCmd is the command of one role: it reads the configuration once,
// then runs the role with it.
func roleCmd(r role, short string, environ []string, run func(context.Context, Config, *slog.Logger) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   string(r),
		Short: short,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(r, cmd.Flags(), environ)
			if err != nil {
				return err
			}
			log := newLogger(cfg.LogLevel)
			if err := servePprof(cmd.Context(), cfg.Debug.PprofAddr, log); err != nil {
				return err
			}
			go memtrim.Run(cmd.Context(), cfg.Debug.ReleaseMemory, log)
			return run(cmd.Context(), cfg, log)
		},
	}
	bindFlags(cmd.Flags(), r, roleFlags[r])
	return cmd
}

// newLogger logs text to stderr at a level validated by loadConfig.
func newLogger(level string) *slog.Logger {
	l, _ := parseLevel(level)
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
