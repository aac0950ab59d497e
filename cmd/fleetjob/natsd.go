package main

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/cobra"
)

// natsdCmd runs a nats-server from a configuration file, embedded in this
// binary: the test harness uses it to run a real 3-node cluster in child
// processes (one of which it can SIGKILL and restart), and a machine
// without nats-server can use it too. It is hidden: it is not fleetjob.
func natsdCmd() *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:    "nats-server",
		Short:  "Run an embedded nats-server from a configuration file",
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if config == "" {
				return errors.New("-c/--config is required")
			}
			opts, err := server.ProcessConfigFile(config)
			if err != nil {
				return fmt.Errorf("nats config %s: %w", config, err)
			}
			s, err := server.NewServer(opts)
			if err != nil {
				return fmt.Errorf("nats server: %w", err)
			}
			s.ConfigureLogger()
			s.Start()
			<-cmd.Context().Done()
			s.Shutdown()
			s.WaitForShutdown()
			return nil
		},
	}
	cmd.Flags().StringVarP(&config, "config", "c", "", "nats-server configuration file")
	return cmd
}
