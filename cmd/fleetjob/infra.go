package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/fleetjob/fleetjob/internal/roles"
	"github.com/fleetjob/fleetjob/schemas"
)

// connectNATS connects with unbounded reconnects: a NATS restart is an
// interruption, not the end of the process. auth are the identity's
// options (credentials, an agent's inbox prefix): every connection has one.
func connectNATS(url, name string, log *slog.Logger, auth ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	if len(auth) == 0 {
		return nil, nil, errors.New("connect nats: no credentials")
	}
	nc, err := nats.Connect(url, append(auth,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrl()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("nats", "err", err) }),
	)...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect nats %s: %w", url, err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(schemas.PublishAsyncTimeout))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// awaitTopology waits until every stream and bucket exists: only the
// admin identity creates them (serve, or `fleetjob nats-auth setup`).
func awaitTopology(ctx context.Context, js jetstream.JetStream, top schemas.Topology, log *slog.Logger) error {
	var missing string
	for i := 0; i < 60; i++ {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		missing = top.Missing(cctx, js)
		cancel()
		if missing == "" || ctx.Err() != nil {
			return ctx.Err()
		}
		if i%10 == 0 {
			log.Warn("waiting for streams the admin creates (serve, or fleetjob nats-auth setup)", "missing", missing)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("stream or bucket %s does not exist: create the topology with the admin credentials (fleetjob nats-auth setup)", missing)
}

// ensureTopology creates streams and buckets, retrying while a cluster
// elects its leaders.
func ensureTopology(ctx context.Context, js jetstream.JetStream, top schemas.Topology, log *slog.Logger) error {
	var err error
	for i := 0; i < 20; i++ {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = top.Ensure(cctx, js)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		log.Warn("streams not ready yet; retrying", "attempt", i+1, "err", err)
		time.Sleep(500 * time.Millisecond)
	}
	return err
}

// openRedis connects to url, or starts an in-process Redis-protocol
// server when url is empty. Redis is only a cache, so that is safe.
func openRedis(url string, log *slog.Logger) (redis.UniversalClient, func(), error) {
	if url == "" {
		mr := miniredis.NewMiniRedis()
		// It listens on loopback, for this process's own client only:
		// a password no one else learns keeps other local users out.
		password := rand.Text()
		mr.RequireAuth(password)
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			return nil, nil, fmt.Errorf("in-process redis: %w", err)
		}
		if !runScriptsInGo(mr) { // see miniscripts.go
			log.Warn("in-process redis: this miniredis's layout is not the one known; the status cache's scripts run in its Lua, several times slower")
		}
		log.Info("redis.url (REDIS_URL) is not set: using an in-process Redis-protocol server (miniredis); it is only a cache and is rebuilt from JetStream", "addr", mr.Addr())
		rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{mr.Addr()}, Password: password})
		stop := make(chan struct{})
		go tidyLoop(mr, stop) // see miniredis.go
		return rdb, func() { close(stop); rdb.Close(); mr.Close() }, nil
	}
	rdb, err := roles.RedisClient(url)
	if err != nil {
		return nil, nil, fmt.Errorf("redis.url (REDIS_URL): %w", err)
	}
	return rdb, func() { rdb.Close() }, nil
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serveMetrics serves /metrics (and /healthz) on addr until ctx ends; an
// empty addr serves nothing.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry) error {
	if addr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"status":"ok"}`)) })
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics server: %w", err)
	}
	return nil
}

// adminToken returns the configured token, or the token kept in dataDir,
// or a new one written there.
func adminToken(dataDir, configured string) (token string, generated bool, err error) {
	if configured != "" {
		return configured, false, nil
	}
	path := filepath.Join(dataDir, "admin.token")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), false, nil
	}
	buf := make([]byte, 24)
	if _, err := rand.Read(buf); err != nil {
		return "", false, err
	}
	token = hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("write %s: %w", path, err)
	}
	return token, true, nil
}

var nonID = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// defaultAgentID derives a stable id from the hostname, cloud and IP.
func defaultAgentID(cloud int64, ip string) string {
	host, _ := os.Hostname()
	id := nonID.ReplaceAllString(host, "-") + "-" + nonID.ReplaceAllString(ip, "-")
	if cloud != 0 {
		id = fmt.Sprintf("%s-c%d", id, cloud)
	}
	if len(id) > 64 {
		id = id[len(id)-64:]
	}
	return strings.Trim(id, "-")
}

// primaryIP guesses the address other hosts reach this one by.
func primaryIP() string {
	ifaces, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range ifaces {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
				return n.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// listenHTTP listens on the API's address; with a certificate configured
// it serves TLS (1.2 at least) only.
func listenHTTP(cfg Config) (net.Listener, error) {
	h := cfg.HTTP
	if (h.TLSCert == "") != (h.TLSKey == "") {
		return nil, errors.New("http.tls_cert and http.tls_key (--http-tls-cert, --http-tls-key) go together")
	}
	var tcfg *tls.Config
	if h.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(h.TLSCert, h.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("http tls: %w", err)
		}
		tcfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", h.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s (choose another with --http-addr): %w", h.Addr, err)
	}
	if tcfg != nil {
		return tls.NewListener(ln, tcfg), nil
	}
	return ln, nil
}

// httpBase is the API's URL as clients reach it.
func httpBase(cfg Config, ln net.Listener) string {
	if cfg.HTTP.TLSCert != "" {
		return "https://" + ln.Addr().String()
	}
	return "http://" + ln.Addr().String()
}
