// Package natsrv starts an embedded nats-server with JetStream, for the
// all-in-one mode and for tests.
package natsrv

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

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
