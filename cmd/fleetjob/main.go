// Command fleetjob is the one binary of fleetjob: the all-in-one server,
// the api, worker and agent roles, and their shared plumbing.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "fleetjob:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	var level string
	root := &cobra.Command{
		Use:           "fleetjob",
		Short:         "A job system for fleets of hosts: scripts, files and deploys over NATS JetStream",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.PersistentFlags().StringVar(&level, "log-level", envOr("FLEETJOB_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env FLEETJOB_LOG_LEVEL)")
	logger := func() *slog.Logger {
		var l slog.Level
		if err := l.UnmarshalText([]byte(level)); err != nil {
			l = slog.LevelInfo
		}
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
	}
	root.AddCommand(serveCmd(logger), apiCmd(logger), workerCmd(logger), agentCmd(logger), natsdCmd())
	return root
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
