package main

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/fleetjob/fleetjob/internal/agentkeys"
	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/schemas"
)

// conn is one identity's connection.
type conn struct {
	NC *nats.Conn
	JS jetstream.JetStream
}

// serveConns makes serve's connections, one identity each, from the
// authority's keys in memory, and closes them in reverse order.
type serveConns struct {
	auth  *natsauth.Authority
	url   string
	log   *slog.Logger
	conns []*nats.Conn
	// inProcess, when set, is the server to connect to in process.
	inProcess nats.InProcessConnProvider
}

func (s *serveConns) service(r natsauth.Role) (conn, error) {
	c, err := s.auth.ServiceCreds(r, "fleetjob-serve-"+string(r))
	if err != nil {
		return conn{}, err
	}
	return s.connect("fleetjob-serve-"+string(r), c.Option())
}

// agent connects as the built-in agent, with the user key kept in its
// data dir (made there on first start) and a JWT issued for it.
func (s *serveConns) agent(id, dir string) (conn, error) {
	keys, err := agentkeys.LoadOrCreate(dir)
	if err != nil {
		return conn{}, err
	}
	tok, err := s.auth.AgentJWT(id, keys.UserPublic())
	if err != nil {
		return conn{}, err
	}
	return s.connect("fleetjob-serve-agent", natsauth.AgentOption(id, tok, keys.User))
}

func (s *serveConns) connect(name string, opts ...nats.Option) (conn, error) {
	url := s.url
	if s.inProcess != nil {
		// no URL: a tls:// one would have the client start TLS on the pipe
		url = ""
		opts = append(opts, nats.InProcessServer(s.inProcess))
	}
	nc, js, err := connectNATS(url, name, s.log, opts...)
	if err != nil {
		return conn{}, err
	}
	s.conns = append(s.conns, nc)
	return conn{NC: nc, JS: js}, nil
}

func (s *serveConns) close() {
	for i := len(s.conns) - 1; i >= 0; i-- {
		_ = s.conns[i].Drain()
	}
}

// natsAuthCmd manages the NATS identities of deployments whose NATS
// servers fleetjob does not embed.
func natsAuthCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "nats-auth", Short: "NATS authentication for external servers and clusters: operator, accounts, service credentials"}
	var dir, resolver string
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Write (or reuse) the operator and account keys in --dir, the nats-server snippet auth.conf and one creds file per service role",
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := natsauth.LoadOrCreate(dir)
			if err != nil {
				return err
			}
			if resolver == "" {
				resolver = filepath.Join(dir, "accounts")
			}
			files, err := a.Init(resolver)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "operator %s, account %s\n", a.OperatorPublic(), a.AccountPublic())
			fmt.Fprintf(out, "server snippet  %s   (include it from every nats-server's config)\n", files.ServerConfig)
			for _, r := range natsauth.Roles {
				fmt.Fprintf(out, "%-15s %s\n", string(r)+" creds", files.Creds[r])
			}
			fmt.Fprintln(out, "keep the directory 0700 and its keys secret: they sign every identity")
			return nil
		},
	}
	initCmd.Flags().StringVar(&dir, "dir", "./nats-auth", "directory of the keys (made 0700, files 0600)")
	initCmd.Flags().StringVar(&resolver, "resolver-dir", "", "the servers' account resolver directory (default: <dir>/accounts)")
	var pool, out string
	sim := &cobra.Command{
		Use:   "simulator",
		Short: "Write the creds of a load simulator (agent --simulate) serving one pool",
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := natsauth.LoadOrCreate(dir)
			if err != nil {
				return err
			}
			c, err := a.SimulatorCreds(pool)
			if err != nil {
				return err
			}
			return natsauth.WriteCreds(out, c)
		},
	}
	sim.Flags().StringVar(&dir, "dir", "./nats-auth", "directory of the keys")
	sim.Flags().StringVar(&pool, "pool", "sim", "the simulator's pool")
	sim.Flags().StringVar(&out, "out", "simulator.creds", "creds file to write (0600)")
	cmd.AddCommand(initCmd, sim, setupCmd(), agentCredsCmd())
	return cmd
}

// setupCmd creates the streams and buckets with the admin's credentials:
// in a deployment of separate roles, only the admin may.
func setupCmd() *cobra.Command {
	var url, creds string
	var replicas int
	cmd := &cobra.Command{
		Use:   "setup",
		Short: "Create fleetjob's streams and buckets on external NATS servers, with the admin credentials",
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger("info")
			nc, js, err := connectNATS(url, "fleetjob-setup", log, nats.UserCredentials(creds))
			if err != nil {
				return err
			}
			defer nc.Close()
			top := schemas.DefaultTopology()
			top.Replicas = replicas
			return ensureTopology(cmd.Context(), js, top, log)
		},
	}
	cmd.Flags().StringVar(&url, "url", "nats://127.0.0.1:4222", "NATS to set up, comma-separated URLs for a cluster")
	cmd.Flags().StringVar(&creds, "creds", "./nats-auth/creds/admin.creds", "the admin's creds file")
	cmd.Flags().IntVar(&replicas, "replicas", 1, "stream and bucket replicas (3 in a cluster)")
	return cmd
}

// agentCredsCmd issues an agent's credentials where the authority's keys
// and the agent's data dir are both at hand (a compose file's init step, a
// test): the agent's key is made in its data dir and never leaves it, the
// creds go to <data-dir>/keys/nats.creds, and its task consumer is made with
// the admin's credentials. Remote agents enrol instead (agent --enrol).
func agentCredsCmd() *cobra.Command {
	var dir, id, dataDir, url, creds string
	var slots int
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Issue an agent's NATS credentials into its data dir and make its task consumer (for agents next to the keys)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := natsauth.LoadOrCreate(dir)
			if err != nil {
				return err
			}
			keys, err := agentkeys.LoadOrCreate(dataDir)
			if err != nil {
				return err
			}
			tok, err := a.AgentJWT(id, keys.UserPublic())
			if err != nil {
				return err
			}
			if err := agentkeys.WriteCreds(dataDir, tok, keys); err != nil {
				return err
			}
			log := newLogger("info")
			nc, js, err := connectNATS(url, "fleetjob-nats-auth", log, nats.UserCredentials(creds))
			if err != nil {
				return err
			}
			defer nc.Close()
			var perr error
			for i := 0; i < 60; i++ { // the streams may not exist yet
				if perr = natsauth.PrepareAgent(cmd.Context(), js, schemas.DefaultTopology(), id, slots); perr == nil {
					return nil
				}
				time.Sleep(time.Second)
			}
			return perr
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "./nats-auth", "directory of the keys")
	cmd.Flags().StringVar(&id, "id", "", "the agent's id")
	cmd.Flags().StringVar(&dataDir, "data-dir", "./data/agent", "the agent's data dir")
	cmd.Flags().StringVar(&url, "url", "nats://127.0.0.1:4222", "NATS, comma-separated URLs for a cluster")
	cmd.Flags().StringVar(&creds, "creds", "./nats-auth/creds/admin.creds", "the admin's creds file")
	cmd.Flags().IntVar(&slots, "slots", 64, "tasks the agent runs at once")
	return cmd
}
