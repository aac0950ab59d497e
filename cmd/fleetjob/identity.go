package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// The token and bk-app commands manage the API's identities as an admin:
// they call the native API (/v1/tokens, /v1/bk-apps) at client.api_url
// with the admin token (FLEETJOB_TOKEN or api.token, else the token serve
// keeps in the data directory). The token is never a flag: argv is
// readable by every user of the machine.

// roleClient is the configuration of the commands that call the API.
const roleClient role = "client"

// client calls the native API as an admin.
type client struct {
	base  string
	token string
	hc    *http.Client
}

func newClient(cfg Config) (*client, error) {
	token := string(cfg.API.Token)
	if token == "" {
		b, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin.token"))
		if err != nil {
			return nil, fmt.Errorf("no admin token: set FLEETJOB_TOKEN (or api.token), or run where serve keeps %s", filepath.Join(cfg.DataDir, "admin.token"))
		}
		token = strings.TrimSpace(string(b))
	}
	return &client{base: strings.TrimRight(cfg.Client.APIURL, "/"), token: token, hc: &http.Client{Timeout: 30 * time.Second}}, nil
}

// do sends a request and decodes a 2xx answer into out; any other answer
// is an error with the API's problem detail.
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode/100 != 2 {
		var p struct {
			Detail string `json:"detail"`
			Errors []struct {
				Field, Reason string
			} `json:"errors"`
		}
		_ = json.Unmarshal(b, &p)
		msg := p.Detail
		for _, e := range p.Errors {
			msg += "; " + e.Field + ": " + e.Reason
		}
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, msg)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// credential is an identity as the API lists it.
type credential struct {
	ID                   string     `json:"id"`
	Kind                 string     `json:"kind"`
	Owner                string     `json:"owner"`
	Role                 string     `json:"role"`
	Scopes               []string   `json:"scopes"`
	TrustedUserAssertion bool       `json:"trusted_user_assertion"`
	CreatedAt            time.Time  `json:"created_at"`
	CreatedBy            string     `json:"created_by"`
	ExpiresAt            *time.Time `json:"expires_at"`
	RevokedAt            *time.Time `json:"revoked_at"`
	Token                string     `json:"token"`
	AppSecret            string     `json:"bk_app_secret"`
}

// clientCmd is a command that calls the API with the client settings.
func clientCmd(use, short string, args cobra.PositionalArgs, environ []string, run func(*cobra.Command, *client, []string) error) *cobra.Command {
	cmd := &cobra.Command{
		Use: use, Short: short, Args: args,
		RunE: func(cmd *cobra.Command, a []string) error {
			cfg, err := loadConfig(roleClient, cmd.Flags(), environ)
			if err != nil {
				return err
			}
			c, err := newClient(cfg)
			if err != nil {
				return err
			}
			return run(cmd, c, a)
		},
	}
	bindFlags(cmd.Flags(), roleClient, roleFlags[roleClient])
	return cmd
}

// tokenCmd is "fleetjob token": create, list and revoke users' tokens.
func tokenCmd(environ []string) *cobra.Command {
	root := &cobra.Command{Use: "token", Short: "Create, list and revoke API tokens (as the admin)"}
	create := clientCmd("create", "Create a token for a user; it is shown once", cobra.NoArgs, environ, func(cmd *cobra.Command, c *client, _ []string) error {
		f := cmd.Flags()
		user, _ := f.GetString("user")
		role, _ := f.GetString("role")
		scopes, _ := f.GetStringArray("scope")
		desc, _ := f.GetString("description")
		ttl, _ := f.GetString("ttl")
		var cr credential
		err := c.do(cmd.Context(), "POST", "/v1/tokens", map[string]any{"user": user, "role": role, "scopes": scopes, "description": desc,
			"ttl": ttl}, &cr)
		if err != nil {
			return err
		}
		// the token alone on stdout (TOKEN=$(fleetjob token create …)), the rest on stderr
		fmt.Fprintf(cmd.ErrOrStderr(), "id      %s\nuser    %s\nrole    %s\nscopes  %s\nexpires %s\nThe token is shown only now; keep it secret. Revoke it with: fleetjob token revoke %s\n",
			cr.ID, cr.Owner, cr.Role, strings.Join(cr.Scopes, ","), expiry(cr.ExpiresAt), cr.ID)
		fmt.Fprintln(cmd.OutOrStdout(), cr.Token)
		return nil
	})
	create.Flags().String("user", "", "the user the token is for")
	create.Flags().String("role", "", "admin, operator (run, stop, operate) or viewer (read)")
	create.Flags().StringArray("scope", nil, "a scope the user acts in, biz:<id> or biz_set:<id> (repeatable)")
	create.Flags().String("description", "", "what the token is for")
	create.Flags().String("ttl", "", "how long the token works, like 720h (default: until revoked)")
	_ = create.MarkFlagRequired("user")
	_ = create.MarkFlagRequired("role")
	root.AddCommand(create,
		clientCmd("list", "List tokens (never their secrets)", cobra.NoArgs, environ, listCredentials("/v1/tokens")),
		clientCmd("revoke <id>", "Revoke a token: its next request fails", cobra.ExactArgs(1), environ, revokeCredential("/v1/tokens/")))
	return root
}

// bkAppCmd is "fleetjob bk-app": create, list and revoke BlueKing apps.
func bkAppCmd(environ []string) *cobra.Command {
	root := &cobra.Command{Use: "bk-app", Short: "Create, list and revoke BlueKing app credentials (as the admin)"}
	create := clientCmd("create", "Create an app's credentials; the secret is shown once", cobra.NoArgs, environ, func(cmd *cobra.Command, c *client, _ []string) error {
		f := cmd.Flags()
		code, _ := f.GetString("code")
		role, _ := f.GetString("role")
		scopes, _ := f.GetStringArray("scope")
		trusted, _ := f.GetBool("trusted-user-assertion")
		desc, _ := f.GetString("description")
		ttl, _ := f.GetString("ttl")
		var cr credential
		err := c.do(cmd.Context(), "POST", "/v1/bk-apps", map[string]any{"bk_app_code": code, "role": role, "scopes": scopes,
			"trusted_user_assertion": trusted, "description": desc, "ttl": ttl}, &cr)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "bk_app_code    %s\nbk_app_secret  %s\nrole           %s\nscopes         %s\ntrusted users  %v\nexpires        %s\n\nThe secret is shown only now; keep it secret. Revoke it with: fleetjob bk-app revoke %s\n",
			cr.ID, cr.AppSecret, cr.Role, strings.Join(cr.Scopes, ","), cr.TrustedUserAssertion, expiry(cr.ExpiresAt), cr.ID)
		return nil
	})
	create.Flags().String("code", "", "the app's bk_app_code")
	create.Flags().String("role", "operator", "admin, operator or viewer")
	create.Flags().StringArray("scope", nil, "a scope the app may act in, biz:<id> or biz_set:<id> (repeatable)")
	create.Flags().Bool("trusted-user-assertion", false, "let the app act as the bk_username it names (as BlueKing's gateway does for apps exempted from user auth)")
	create.Flags().String("description", "", "what the app is")
	create.Flags().String("ttl", "", "how long the secret works, like 8760h (default: until revoked)")
	_ = create.MarkFlagRequired("code")
	root.AddCommand(create,
		clientCmd("list", "List apps (never their secrets)", cobra.NoArgs, environ, listCredentials("/v1/bk-apps")),
		clientCmd("revoke <bk_app_code>", "Revoke an app: its next request fails", cobra.ExactArgs(1), environ, revokeCredential("/v1/bk-apps/")))
	return root
}

func listCredentials(path string) func(*cobra.Command, *client, []string) error {
	return func(cmd *cobra.Command, c *client, _ []string) error {
		var out struct{ Items []credential }
		if err := c.do(cmd.Context(), "GET", path, nil, &out); err != nil {
			return err
		}
		w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tOWNER\tROLE\tSCOPES\tCREATED\tEXPIRES\tREVOKED")
		for _, cr := range out.Items {
			revoked := "-"
			if cr.RevokedAt != nil {
				revoked = cr.RevokedAt.Format(time.RFC3339)
			}
			owner := cr.Owner
			if cr.TrustedUserAssertion {
				owner += " (asserts users)"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cr.ID, owner, cr.Role, strings.Join(cr.Scopes, ","), cr.CreatedAt.Format(time.RFC3339),
				expiry(cr.ExpiresAt), revoked)
		}
		return w.Flush()
	}
}

// expiry shows when a credential expires: "never", the time, and
// "(expired)" once it has.
func expiry(at *time.Time) string {
	switch {
	case at == nil:
		return "never"
	case !time.Now().Before(*at):
		return at.Format(time.RFC3339) + " (expired)"
	}
	return at.Format(time.RFC3339)
}

func revokeCredential(prefix string) func(*cobra.Command, *client, []string) error {
	return func(cmd *cobra.Command, c *client, args []string) error {
		if err := c.do(cmd.Context(), "DELETE", prefix+url.PathEscape(args[0]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "revoked %s\n", args[0])
		return nil
	}
}
