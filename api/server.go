// Package api is fleetjob's HTTP core: the echo server and its middleware,
// the error mapping, the command core every surface shares (submit, claims,
// stop, operate, the high-risk check) and the small read interfaces the
// surfaces answer from. Each client contract is a surface in its own
// package beside this one (api/native, api/octans, api/bkjob), owning its
// routes, types and error envelope; no surface imports another. The API
// never runs work: each write is one JetStream command.
package api

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 4 << 20

// BodyReadTimeout bounds reading a request, headers and body: 4 MiB at a
// slow 150 KB/s.
const BodyReadTimeout = 30 * time.Second

// Surface is one client contract served beside the others.
type Surface interface {
	// Register adds the surface's routes (including, for paths it owns
	// that match no API, a RouteNotFound handler).
	Register(e *echo.Echo)
	// WriteError answers err in the surface's envelope, with the HTTP
	// status its original uses.
	WriteError(c echo.Context, err error)
}

// Server is the HTTP API: the core's operational routes and the surfaces'.
type Server struct {
	e        *echo.Echo
	log      *slog.Logger
	checks   map[string]Checker
	owners   map[string]Surface // route path → the surface that registered it
	requests *prometheus.HistogramVec
}

// New builds the server: /healthz, /readyz (running checks), /metrics
// (gathering reg) and every surface's routes.
func New(log *slog.Logger, reg *prometheus.Registry, checks map[string]Checker, surfaces ...Surface) *Server {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	s := &Server{e: e, log: log.With("component", "api"), checks: checks, owners: map[string]Surface{},
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "fleetjob_api_request_seconds",
			Help: "API request latency.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"route", "code"}),
	}
	reg.MustRegister(s.requests)
	e.HTTPErrorHandler = s.errorHandler
	e.Use(middleware.Recover())
	e.Use(s.measure)
	e.Use(middleware.BodyLimit(fmt.Sprintf("%dB", MaxBodyBytes)))

	// Unauthenticated on purpose: liveness, readiness and metrics carry no
	// job data and are what load balancers and Prometheus scrape.
	e.GET("/healthz", func(c echo.Context) error { return c.JSON(http.StatusOK, map[string]string{"status": "ok"}) })
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	for _, sf := range surfaces {
		before := routeSet(e)
		sf.Register(e)
		for path := range routeSet(e) {
			if !before[path] {
				s.owners[path] = sf
			}
		}
	}
	return s
}

func routeSet(e *echo.Echo) map[string]bool {
	out := map[string]bool{}
	for _, r := range e.Routes() {
		out[r.Path] = true
	}
	return out
}

// Handler exposes the routes, for tests.
func (s *Server) Handler() http.Handler { return s.e }

// Serve listens on ln until ctx ends, then shuts down within 10 seconds.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	// Bounded reads: a client that sends its headers or its body slowly
	// (a slowloris) holds a connection at most this long; idle keep-alive
	// connections are closed after IdleTimeout.
	srv := &http.Server{Handler: s.e, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: BodyReadTimeout,
		IdleTimeout: 2 * time.Minute}
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
	<-errc
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
		s.requests.WithLabelValues(route, fmt.Sprint(c.Response().Status)).Observe(time.Since(start).Seconds())
		return nil
	}
}

func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	out := map[string]string{}
	code := http.StatusOK
	for name, check := range s.checks {
		if err := check(ctx); err != nil {
			out[name] = err.Error()
			code = http.StatusServiceUnavailable
		} else {
			out[name] = "ok"
		}
	}
	return c.JSON(code, out)
}

// errorHandler hands an error to the surface that registered the route it
// came from; routes of no surface answer RFC 9457 problems.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	if sf, ok := s.owners[c.Path()]; ok {
		sf.WriteError(c, err)
		return
	}
	WriteProblem(c, s.log, err)
}
