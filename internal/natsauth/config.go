package natsauth

// This file writes the server side and the service credentials for
// nats-servers fleetjob does not embed: a cluster, compose, Kubernetes.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ServerConfig is a nats-server configuration snippet (to include from a
// server's own file) that trusts this authority: the operator, the system
// account, and a full account resolver in resolverDir preloaded with both
// accounts. Every server of a cluster includes the same snippet.
func (a *Authority) ServerConfig(resolverDir string) (string, error) {
	op, err := a.OperatorJWT()
	if err != nil {
		return "", err
	}
	sys, err := a.SystemJWT()
	if err != nil {
		return "", err
	}
	acc, err := a.AccountJWT()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# fleetjob's NATS authentication: operator %s.\n", a.OperatorPublic())
	b.WriteString("# Written by `fleetjob nats-auth init`; every server of a cluster includes it.\n")
	fmt.Fprintf(&b, "operator: %q\n", op)
	fmt.Fprintf(&b, "system_account: %s\n", a.SystemPublic())
	fmt.Fprintf(&b, "resolver: {\n  type: full\n  dir: %q\n  allow_delete: false\n  interval: \"2m\"\n}\n", resolverDir)
	fmt.Fprintf(&b, "resolver_preload: {\n  %s: %q\n  %s: %q\n}\n", a.SystemPublic(), sys, a.AccountPublic(), acc)
	return b.String(), nil
}

// InitFiles are the paths Init wrote.
type InitFiles struct {
	ServerConfig string
	Creds        map[Role]string
}

// Init writes, into the authority's directory, the server snippet
// (auth.conf, its resolver under resolverDir) and one creds file (0600)
// per service role, each a new user. Simulators' creds are made by
// SimulatorCreds; agents get theirs by enrolling.
func (a *Authority) Init(resolverDir string) (InitFiles, error) {
	conf, err := a.ServerConfig(resolverDir)
	if err != nil {
		return InitFiles{}, err
	}
	out := InitFiles{ServerConfig: filepath.Join(a.dir, "auth.conf"), Creds: map[Role]string{}}
	if err := writeFile(out.ServerConfig, []byte(conf)); err != nil {
		return InitFiles{}, err
	}
	if err := os.MkdirAll(filepath.Join(a.dir, "creds"), 0o700); err != nil {
		return InitFiles{}, fmt.Errorf("creds dir: %w", err)
	}
	for _, r := range Roles {
		c, err := a.ServiceCreds(r, "fleetjob-"+string(r))
		if err != nil {
			return InitFiles{}, err
		}
		b, err := c.File()
		if err != nil {
			return InitFiles{}, err
		}
		path := filepath.Join(a.dir, "creds", string(r)+".creds")
		if err := writeFile(path, b); err != nil {
			return InitFiles{}, err
		}
		out.Creds[r] = path
	}
	return out, nil
}

// WriteCreds writes c as a creds file (0600) at path.
func WriteCreds(path string, c Creds) error {
	b, err := c.File()
	if err != nil {
		return err
	}
	return writeFile(path, b)
}
