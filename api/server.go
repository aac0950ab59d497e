// Package api is fleetjob's HTTP front: it authenticates, validates, turns
// each write into one JetStream command (waiting for the publish ack) and
// answers; reads come from the Redis status cache with JetStream behind it.
// It never runs work itself. Each surface (native v1, octans, …) lives in
// its own file with its own error envelope.
package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fleetjob/fleetjob/api/riskrules"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/logindex"
	"github.com/fleetjob/fleetjob/workers/statuscache"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 4 << 20

// Publisher turns a command into one JetStream message; the stream
// sequence of the publish ack comes back, and dup says the message id had
// been seen within the dedupe window (the sequence is then the original's).
type Publisher interface {
	Publish(ctx context.Context, subject string, body []byte, msgID string) (seq uint64, dup bool, err error)
}

// Claims is the names bucket: unique task names and idempotency keys.
type Claims interface {
	Claim(ctx context.Context, key string, id int64) (existing int64, err error)
	Lookup(ctx context.Context, key string) (int64, bool, error)
}

// AgentLister lists the registered agents.
type AgentLister interface {
	All() []schemas.AgentInfo
	TTL() time.Duration
}

// Checker reports whether a dependency answers.
type Checker func(ctx context.Context) error

// Config is what the API needs to know.
type Config struct {
	Addr string
	// Token is the admin bearer token of the native API.
	Token string
	// CompatToken, when set, is required (as a bearer token) by the
	// compatibility surfaces whose clients send no credentials (octans).
	CompatToken string
	// RiskRules is a rule file (JSON) that replaces the shipped high-risk
	// command rules; empty keeps the defaults.
	RiskRules string
}

// Deps are the API's collaborators.
type Deps struct {
	Publisher Publisher
	Claims    Claims
	Cache     *statuscache.Cache
	Logs      *logindex.Reader
	Agents    AgentLister
	Checks    map[string]Checker
	Registry  *prometheus.Registry
	Log       *slog.Logger
	// Risk checks scripts against the high-risk command rules; nil checks
	// nothing.
	Risk *riskrules.Engine
	// Queued caches accepted jobs off the request path; nil writes them
	// through Cache in the request.
	Queued *statuscache.Batcher
	// DeadLetters is the bucket of messages that failed for good.
	DeadLetters jetstream.KeyValue
}

// Server is the HTTP API.
type Server struct {
	cfg  Config
	deps Deps
	e    *echo.Echo
	m    *apiMetrics
	log  *slog.Logger
}

type apiMetrics struct {
	submitted *prometheus.CounterVec
	requests  *prometheus.HistogramVec
}

// New builds the server and its routes.
func New(cfg Config, deps Deps) *Server {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	s := &Server{cfg: cfg, deps: deps, e: e, log: deps.Log.With("component", "api")}
	s.m = &apiMetrics{
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetjob_api_jobs_submitted_total",
			Help: "Jobs accepted by the API, by surface."}, []string{"surface"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "fleetjob_api_request_seconds",
			Help: "API request latency.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"route", "code"}),
	}
	deps.Registry.MustRegister(s.m.submitted, s.m.requests)
	e.HTTPErrorHandler = s.errorHandler
	e.Use(middleware.Recover())
	e.Use(s.measure)
	e.Use(middleware.BodyLimit(fmt.Sprintf("%dB", MaxBodyBytes)))

	e.GET("/healthz", func(c echo.Context) error { return c.JSON(http.StatusOK, map[string]string{"status": "ok"}) })
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(deps.Registry, promhttp.HandlerOpts{})))
	s.nativeRoutes(e.Group("/v1", s.bearer(cfg.Token)))
	s.octansRoutes(e.Group("/api", s.bearer(cfg.CompatToken)))
	s.bkjobRoutes(e)
	return s
}

// Handler exposes the routes, for tests.
func (s *Server) Handler() http.Handler { return s.e }

// Serve listens on ln until ctx ends, then shuts down within 10 seconds.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	srv := &http.Server{Handler: s.e, ReadHeaderTimeout: 10 * time.Second}
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("api shutdown: %w", err)
	}
	return nil
}

func (s *Server) measure(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		s.m.requests.WithLabelValues(route, fmt.Sprint(c.Response().Status)).Observe(time.Since(start).Seconds())
		return nil
	}
}

// bearer requires "Authorization: Bearer <token>" when token is set.
func (s *Server) bearer(token string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if token == "" {
				return next(c)
			}
			got, ok := strings.CutPrefix(c.Request().Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
				return errUnauthorized
			}
			return next(c)
		}
	}
}

var errUnauthorized = errors.New("missing or wrong bearer token")

func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	out := map[string]string{}
	code := http.StatusOK
	for name, check := range s.deps.Checks {
		if err := check(ctx); err != nil {
			out[name] = err.Error()
			code = http.StatusServiceUnavailable
		} else {
			out[name] = "ok"
		}
	}
	return c.JSON(code, out)
}

// errorHandler hands an error to the envelope of the surface it came from.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	switch path := c.Request().URL.Path; {
	case isBKJobPath(path):
		s.bkjobError(err, c)
	case strings.HasPrefix(path, "/api/"):
		s.octansError(err, c)
	default:
		s.problem(err, c)
	}
}

// statusOf maps known errors to an HTTP status; 0 means internal.
func statusOf(err error) int {
	var he *echo.HTTPError
	switch {
	case errors.As(err, &he):
		return he.Code
	case errors.Is(err, errUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, schemas.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, schemas.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, schemas.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, schemas.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return 0
}
