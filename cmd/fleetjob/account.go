package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fleetjob/fleetjob/schemas"
)

// fleetjob account: the execution account aliases of each scope, through
// the native API (/v1/accounts) with the admin credential.

// clientSettings are what a client command reads: where the API is and
// the admin token. They come, each overriding the one before, from the
// defaults, the config file (--config or FLEETJOB_CONFIG: keys client.api,
// api.token, data_dir), the environment and the flags. Without a token,
// the one serve keeps in <data_dir>/admin.token is used.
type clientSettings struct {
	API     string
	Token   string
	DataDir string
}

// clientKeys maps each client setting's key to its environment variable
// and flag.
var clientKeys = []struct{ key, env, flag, def, help string }{
	{"client.api", "FLEETJOB_API", "api", "http://127.0.0.1:8080", "URL of the fleetjob API"},
	{"api.token", "FLEETJOB_TOKEN", "token", "", "admin token (default: the one serve keeps in <data-dir>/admin.token)"},
	{"data_dir", "FLEETJOB_DATA_DIR", "data-dir", "./data", "serve's data directory, where its admin token is kept"},
}

func bindClientFlags(fs *pflag.FlagSet) {
	for _, c := range clientKeys {
		fs.String(c.flag, c.def, c.help+" (env "+c.env+")")
	}
}

func loadClient(fs *pflag.FlagSet, environ []string) (clientSettings, error) {
	k := koanf.New(".")
	def, envKeys, flagKeys := map[string]any{}, map[string]string{}, map[string]string{}
	for _, c := range clientKeys {
		def[c.key], envKeys[c.env], flagKeys[c.flag] = c.def, c.key, c.key
	}
	_ = k.Load(confmap.Provider(def, "."), nil)
	path, _ := fs.GetString("config")
	if path == "" {
		path = lookupEnv(environ, configEnv)
	}
	if path != "" {
		if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
			return clientSettings{}, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	if err := k.Load(env.Provider(".", env.Opt{
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(name, v string) (string, any) {
			if v == "" {
				return "", nil
			}
			return envKeys[name], v
		},
	}), nil); err != nil {
		return clientSettings{}, fmt.Errorf("environment: %w", err)
	}
	if err := k.Load(posflag.ProviderWithFlag(fs, ".", k, func(f *pflag.Flag) (string, any) {
		key, ok := flagKeys[f.Name]
		if !ok {
			return "", nil
		}
		return key, posflag.FlagVal(fs, f)
	}), nil); err != nil {
		return clientSettings{}, fmt.Errorf("flags: %w", err)
	}
	c := clientSettings{API: strings.TrimRight(k.String("client.api"), "/"), Token: k.String("api.token"), DataDir: k.String("data_dir")}
	if c.Token == "" {
		b, err := os.ReadFile(filepath.Join(c.DataDir, "admin.token"))
		if err != nil {
			return c, fmt.Errorf("no admin token: give --token or FLEETJOB_TOKEN (%v)", err)
		}
		c.Token = strings.TrimSpace(string(b))
	}
	return c, nil
}

// call sends one request to the API; an answer other than 2xx is an
// error carrying its problem's detail.
func (c clientSettings) call(method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.API+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode/100 != 2 {
		var p struct {
			Detail string `json:"detail"`
			Errors []schemas.FieldError
		}
		if json.Unmarshal(b, &p) == nil && p.Detail != "" {
			msg := p.Detail
			for _, fe := range p.Errors {
				msg += "; " + fe.Field + ": " + fe.Reason
			}
			return fmt.Errorf("%s %s: %d: %s", method, path, resp.StatusCode, msg)
		}
		return fmt.Errorf("%s %s: %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

// accountCmd is fleetjob account set|list|delete.
func accountCmd(environ []string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "account",
		Short: "Manage execution account aliases (alias → OS user) per scope; admin only",
		Long: `Jobs name accounts by alias (native "user", octans "user", BlueKing
"account_alias"); each resolves through the job's scope's aliases, then the
global set, to the OS user the agent runs the work as. A scope is biz:<id>,
biz_set:<id>, or "global".`,
	}
	bindClientFlags(cmd.PersistentFlags())
	client := func(c *cobra.Command) (clientSettings, error) { return loadClient(c.Flags(), environ) }

	var deny bool
	var bkID int64
	set := &cobra.Command{
		Use:   "set <scope> <alias> [<os-user>]",
		Short: "Map an alias of a scope to an OS user (or --deny it in the scope)",
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(c *cobra.Command, args []string) error {
			if deny != (len(args) == 2) {
				return fmt.Errorf("give an OS user, or --deny without one")
			}
			cl, err := client(c)
			if err != nil {
				return err
			}
			body := map[string]any{"deny": deny, "bk_account_id": bkID}
			if !deny {
				body["os_user"] = args[2]
			}
			var a schemas.Account
			if err := cl.call("PUT", accountPath(args[0], args[1]), body, &a); err != nil {
				return err
			}
			printAccounts(c.OutOrStdout(), []schemas.Account{a})
			return nil
		},
	}
	set.Flags().BoolVar(&deny, "deny", false, "forbid the alias in the scope, even where the global set has it")
	set.Flags().Int64Var(&bkID, "bk-account-id", 0, "the BlueKing account_id clients name this alias by (unique in its set)")

	var scope string
	list := &cobra.Command{
		Use:   "list",
		Short: "List the aliases of every scope, or of one (--scope)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := client(c)
			if err != nil {
				return err
			}
			path := "/v1/accounts"
			if c.Flags().Changed("scope") {
				path += "?scope=" + url.QueryEscape(scope)
			}
			var out struct{ Items []schemas.Account }
			if err := cl.call("GET", path, nil, &out); err != nil {
				return err
			}
			printAccounts(c.OutOrStdout(), out.Items)
			return nil
		},
	}
	list.Flags().StringVar(&scope, "scope", "", `only this scope's aliases ("global" for the global set)`)

	del := &cobra.Command{
		Use:   "delete <scope> <alias>",
		Short: "Remove an alias from a scope",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := client(c)
			if err != nil {
				return err
			}
			return cl.call("DELETE", accountPath(args[0], args[1]), nil, nil)
		},
	}
	cmd.AddCommand(set, list, del)
	return cmd
}

func accountPath(scope, alias string) string {
	return "/v1/accounts/" + url.PathEscape(scope) + "/" + url.PathEscape(alias)
}

func printAccounts(w io.Writer, as []schemas.Account) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCOPE\tALIAS\tOS USER\tBK ACCOUNT ID")
	for _, a := range as {
		scope, user := a.Scope, a.OSUser
		if scope == "" {
			scope = "global"
		}
		if a.Deny {
			user = "(denied)"
		}
		bk := "-"
		if a.BKAccountID > 0 {
			bk = strconv.FormatInt(a.BKAccountID, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", scope, a.Alias, user, bk)
	}
	tw.Flush()
}
