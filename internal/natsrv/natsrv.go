// Package natsrv starts an embedded nats-server with JetStream, for the
// all-in-one mode and for tests. It always runs with authentication: the
// operator JWT model a real cluster runs (see package natsauth), with a
// full account resolver in the store directory.
package natsrv

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
)

// Config describes the embedded server.
type Config struct {
	// Addr is host:port to listen on; port 0 or -1 picks a free one.
	Addr     string
	StoreDir string
	// SyncInterval is how often the store is fsynced; 0 keeps the server's
	// default (2 minutes). SyncAlways syncs every write.
	SyncInterval time.Duration
	SyncAlways   bool
	MaxPayload   int32
	Name         string
	// Auth is required: there is no mode without authentication.
	Auth *Auth
	// TLS, when it names a certificate, makes clients connect with TLS;
	// with a CA too, every client must present a certificate it signed
	// (mTLS).
	TLS TLSFiles
}

// TLSFiles are PEM files: a certificate, its key and a CA.
type TLSFiles struct{ Cert, Key, CA string }

// Auth is the server's side of decentralized JWT auth.
type Auth struct {
	// OperatorJWT is the trusted operator's JWT.
	OperatorJWT string
	// SystemAccount is the system account's public key.
	SystemAccount string
	// Accounts are account JWTs (by public key) stored in the resolver at
	// start; later updates are pushed over the system account.
	Accounts map[string]string
}

// Start runs the server and waits until it accepts connections.
func Start(cfg Config) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("nats addr %q: %w", cfg.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats port %q: %w", portStr, err)
	}
	if port == 0 {
		port = -1
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = 8 << 20
	}
	if cfg.Auth == nil {
		return nil, errors.New("embedded nats: no auth configured; the server never runs without authentication")
	}
	op, err := jwt.DecodeOperatorClaims(cfg.Auth.OperatorJWT)
	if err != nil {
		return nil, fmt.Errorf("nats operator jwt: %w", err)
	}
	res, err := server.NewDirAccResolver(filepath.Join(cfg.StoreDir, "accounts"), 0, time.Minute, server.NoDelete)
	if err != nil {
		return nil, fmt.Errorf("nats account resolver: %w", err)
	}
	for pub, tok := range cfg.Auth.Accounts {
		if err := res.Store(pub, tok); err != nil {
			return nil, fmt.Errorf("nats account %s: %w", pub, err)
		}
	}
	opts := &server.Options{
		ServerName:   cfg.Name,
		Host:         host,
		Port:         port,
		JetStream:    true,
		StoreDir:     cfg.StoreDir,
		MaxPayload:   cfg.MaxPayload,
		NoSigs:       true,
		NoLog:        true,
		SyncInterval: cfg.SyncInterval,
		SyncAlways:   cfg.SyncAlways,

		TrustedOperators: []*jwt.OperatorClaims{op},
		SystemAccount:    cfg.Auth.SystemAccount,
		AccountResolver:  res,
	}
	if cfg.TLS.Cert != "" || cfg.TLS.Key != "" || cfg.TLS.CA != "" {
		if cfg.TLS.Cert == "" || cfg.TLS.Key == "" {
			return nil, errors.New("nats tls: a certificate needs its key, and a CA a certificate")
		}
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLS.Cert, KeyFile: cfg.TLS.Key,
			CaFile: cfg.TLS.CA, Verify: cfg.TLS.CA != "", Timeout: 2})
		if err != nil {
			return nil, fmt.Errorf("nats tls: %w", err)
		}
		opts.TLSConfig, opts.TLS, opts.TLSVerify, opts.TLSTimeout = tc, true, cfg.TLS.CA != "", 2
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("new nats server: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded nats server not ready after 15s")
	}
	return s, nil
}
