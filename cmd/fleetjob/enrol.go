package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/internal/agentkeys"
	"github.com/fleetjob/fleetjob/schemas"
)

// This file is enrolment on the command line: `agent --enrol` (the agent
// makes its keys, sends the public halves with its one-use token and
// keeps the credentials it gets), and the admin's `enrolment create` and
// `agent revoke`.

// enrolConfig are the settings of agent --enrol.
type enrolConfig struct {
	URL   string `koanf:"url"`
	Token secret `koanf:"token"`
	Only  bool   `koanf:"only"`
}

func (c *Config) validateEnrol(p *problems) {
	e := c.Enrol
	if e.URL == "" {
		if e.Only {
			p.add("enrol.only", "needs the API to enrol at (--enrol <api-url>)")
		}
		if e.Token != "" {
			p.add("enrol.token", "given without the API to enrol at (--enrol <api-url>)")
		}
		return
	}
	if u, err := url.Parse(e.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.add("enrol.url", "%q is not an http(s) URL of the fleetjob API", e.URL)
	}
	p.required("enrol.token", string(e.Token))
	if c.Agent.DataDir == "" {
		p.add("agent.data_dir", "required to keep the agent's keys and credentials")
	}
}

// enrolledFile records, in the agent's data dir, that it is enrolled.
const enrolledFile = "enrolled.json"

// enrolment is what the agent keeps of its enrolment (no secret: the
// credentials are in the creds file).
type enrolment struct {
	Agent    string         `json:"agent"`
	API      string         `json:"api"`
	NATSURLs []string       `json:"nats_urls"`
	Scope    string         `json:"scope,omitempty"`
	Hosts    []schemas.Host `json:"hosts"`
	Enrolled time.Time      `json:"enrolled"`
}

// enrolledAgentID is the id an agent enrols and runs as: its pool when it
// simulates, else --id or its default.
func enrolledAgentID(cfg Config) string {
	if cfg.Simulate.Agents > 0 {
		return cfg.Simulate.Pool
	}
	return agentSettings(cfg, cfg.Agent.DataDir, cfg.topology()).ID
}

// enrolAgent enrols the agent at cfg.Enrol.URL unless its data dir says
// it is enrolled already: it makes (or reads) its keys, sends the public
// halves and stores the credentials it is issued, 0600.
func enrolAgent(ctx context.Context, cfg Config, log *slog.Logger) error {
	dir := cfg.Agent.DataDir
	if b, err := os.ReadFile(filepath.Join(dir, enrolledFile)); err == nil {
		var e enrolment
		_ = json.Unmarshal(b, &e)
		log.Info("already enrolled; --enrol is ignored", "agent", e.Agent, "api", e.API, "record", filepath.Join(dir, enrolledFile))
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("enrolment record: %w", err)
	}
	keys, err := agentkeys.LoadOrCreate(dir)
	if err != nil {
		return err
	}
	id := enrolledAgentID(cfg)
	req := api.EnrolRequest{Agent: id, Hostname: hostname(), NKey: keys.UserPublic(), XKey: keys.CurvePublic()}
	if cfg.Simulate.Agents == 0 {
		req.Slots = cfg.Agent.Slots
	}
	var resp api.EnrolResponse
	if err := callAPI(ctx, cfg.Enrol.URL, string(cfg.Enrol.Token), http.MethodPost, "/v1/enrol", req, &resp); err != nil {
		return fmt.Errorf("enrol %s at %s: %w", id, cfg.Enrol.URL, err)
	}
	if resp.JWT != "" {
		if err := agentkeys.WriteCreds(dir, resp.JWT, keys); err != nil {
			return err
		}
	} else {
		log.Warn("enrolled without NATS credentials", "note", resp.Note)
	}
	b, _ := json.MarshalIndent(enrolment{Agent: resp.Agent, API: cfg.Enrol.URL, NATSURLs: resp.NATSURLs, Scope: resp.Scope,
		Hosts: resp.Hosts, Enrolled: time.Now().UTC()}, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, enrolledFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("enrolment record: %w", err)
	}
	log.Info("agent enrolled", "agent", resp.Agent, "scope", resp.Scope, "hosts", len(resp.Hosts),
		"nats_urls", strings.Join(resp.NATSURLs, ","), "creds", resp.JWT != "")
	return nil
}

// callAPI sends body (JSON) to the API with a bearer token and decodes a
// 2xx answer into out; other answers become an error with the problem's
// detail and field errors.
func callAPI(ctx context.Context, base, token, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(base, "/")+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		var p api.Problem
		if json.Unmarshal(b, &p) != nil || p.Detail == "" {
			return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
		}
		msg := p.Detail
		for _, fe := range p.Errors {
			msg += "; " + fe.Field + ": " + fe.Reason
		}
		return fmt.Errorf("%s: %s", resp.Status, msg)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// adminFlags are the API URL and admin token of the admin commands,
// from flags or FLEETJOB_API and FLEETJOB_TOKEN.
type adminFlags struct{ api, token string }

func (a *adminFlags) bind(cmd *cobra.Command, environ []string) {
	def := lookupEnv(environ, "FLEETJOB_API")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	cmd.Flags().StringVar(&a.api, "api", def, "the fleetjob API (env FLEETJOB_API)")
	cmd.Flags().StringVar(&a.token, "token", "", "admin token (env FLEETJOB_TOKEN)")
	env := lookupEnv(environ, "FLEETJOB_TOKEN")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if a.token == "" {
			a.token = env
		}
		if a.token == "" {
			return errors.New("an admin token is needed: --token or FLEETJOB_TOKEN")
		}
		return nil
	}
}

// enrolmentCmd is `fleetjob enrolment create`.
func enrolmentCmd(environ []string) *cobra.Command {
	var (
		admin               adminFlags
		req                 api.TokenRequest
		hosts, labels, rngs []string
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Make a one-use enrolment token for an agent: the hosts it may serve, its scope and labels",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, h := range hosts {
				host, err := schemas.ParseHost(h)
				if err != nil {
					return fmt.Errorf("--host %q: want ip or cloud:ip", h)
				}
				req.Hosts = append(req.Hosts, host)
			}
			for _, r := range rngs {
				hr, err := schemas.ParseHostRange(r)
				if err != nil {
					return fmt.Errorf("--range: %w", err)
				}
				req.Ranges = append(req.Ranges, hr)
			}
			var err error
			if req.Labels, err = parseLabels(labels); err != nil {
				return fmt.Errorf("--label %w", err)
			}
			var out api.TokenResponse
			if err := callAPI(cmd.Context(), admin.api, admin.token, http.MethodPost, "/v1/enrolments", req, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "enrolment token (shown once; one use; expires %s):\n", out.Expires.Format(time.RFC3339))
			fmt.Fprintln(cmd.OutOrStdout(), out.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "on the host: fleetjob agent --enrol %s --token <token>\n", admin.api)
			return nil
		},
	}
	admin.bind(create, environ)
	f := create.Flags()
	f.StringVar(&req.Scope, "scope", "", "the business the agent's hosts belong to: biz:<id> or biz_set:<id>")
	f.StringArrayVar(&hosts, "host", nil, "a host the agent may serve, ip or cloud:ip (repeatable)")
	f.Int64SliceVar(&req.HostIDs, "host-id", nil, "a CMDB host id (BlueKing bk_host_id) the agent may claim (repeatable)")
	f.StringArrayVar(&labels, "label", nil, "label k=v (repeatable)")
	f.StringVar(&req.TTL, "ttl", "1h", "how long the token may be used")
	f.StringVar(&req.Agent, "agent-id", "", "the only agent id the token enrols")
	f.BoolVar(&req.Simulator, "simulator", false, "LOAD TOOL: the token enrols a simulator pool (agent --simulate); give --range")
	f.StringArrayVar(&rngs, "range", nil, "with --simulator: hosts [cloud:]first-last (repeatable)")
	cmd := &cobra.Command{Use: "enrolment", Short: "Enrolment tokens for agents"}
	cmd.AddCommand(create)
	return cmd
}

// revokeCmd is `fleetjob agent revoke <id>`.
func revokeCmd(environ []string) *cobra.Command {
	var admin adminFlags
	cmd := &cobra.Command{
		Use:   "revoke <agent-id>",
		Short: "Revoke an agent: it gets no more work and its NATS credentials stop working",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var rec schemas.Enrolment
			if err := callAPI(cmd.Context(), admin.api, admin.token, http.MethodPost, "/v1/agents/"+url.PathEscape(args[0])+"/revoke", nil, &rec); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "agent %s revoked at %s\n", rec.Agent, rec.Revoked.Format(time.RFC3339))
			return nil
		},
	}
	admin.bind(cmd, environ)
	return cmd
}
