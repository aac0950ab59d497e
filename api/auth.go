package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/fleetjob/fleetjob/schemas"
)

// Principal is who makes a request, as the one authentication step of the
// core established it: every surface authenticates before it reads a body
// and puts the principal in the request's context.
type Principal struct {
	// Actor is the acting identity: a user, a BlueKing app, or the user a
	// trusted app asserted.
	Actor string `json:"actor"`
	// App is the BlueKing app that called, when it is not the actor itself.
	App    string          `json:"app,omitempty"`
	Role   Role            `json:"role"`
	Scopes []schemas.Scope `json:"scopes,omitempty"`
	Kind   CredentialKind  `json:"kind"`
	// CredentialID names the credential used (rate limits, audit).
	CredentialID  string `json:"credential_id,omitempty"`
	Surface       string `json:"surface"`
	Source        string `json:"source"`
	CorrelationID string `json:"correlation_id,omitempty"`
}

// Admin reports whether the principal may do everything.
func (p *Principal) Admin() bool { return p.Role == RoleAdmin }

// May reports whether the principal's role includes r.
func (p *Principal) May(r Role) bool { return p.Role.rank() >= r.rank() && r.rank() > 0 }

// Holds reports whether an object of scope sc (nil: no scope) is within
// the principal's scopes. Admins hold every scope and objects of none.
func (p *Principal) Holds(sc *schemas.Scope) bool {
	if p.Admin() {
		return true
	}
	return sc != nil && slices.Contains(p.Scopes, *sc)
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal of a request's context.
func PrincipalFrom(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok && p != nil
}

// PrincipalOf is the principal of ctx, or an empty one (no role, no
// scope: allowed nothing) when there is none.
func PrincipalOf(ctx context.Context) *Principal {
	if p, ok := PrincipalFrom(ctx); ok {
		return p
	}
	return &Principal{}
}

// Require is the one check of what a caller may do: role r on an object
// of scope sc (nil: an object of no scope, or none at all when any is
// false). An object outside the caller's scopes is not found, so the
// caller learns nothing of it; a role too low is forbidden.
func Require(ctx context.Context, r Role, sc *schemas.Scope, object bool) error {
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return fmt.Errorf("no authenticated caller: %w", ErrUnauthorized)
	}
	if object && !p.Holds(sc) {
		return schemas.NotFound("not found")
	}
	if !p.May(r) {
		return Forbidden("a %s may not do this (needs %s)", p.Role, r)
	}
	return nil
}

// NetworkGrant admits requests without credentials from a source network
// (octans clients that cannot send a token) as a low-privilege identity.
type NetworkGrant struct {
	Prefix netip.Prefix
	Role   Role
	Scopes []schemas.Scope
}

// ParseNetworkGrant reads "10.1.0.0/16" or "10.1.0.0/16=biz:2+biz:3"
// (operator of those scopes); without scopes the network may only act as
// an operator of jobs with no scope, which admins alone can target, so a
// grant should name its scopes.
func ParseNetworkGrant(s string) (NetworkGrant, error) {
	pfx, scopes, _ := strings.Cut(strings.TrimSpace(s), "=")
	p, err := netip.ParsePrefix(strings.TrimSpace(pfx))
	if err != nil {
		if a, aerr := netip.ParseAddr(strings.TrimSpace(pfx)); aerr == nil {
			p = netip.PrefixFrom(a, a.BitLen())
		} else {
			return NetworkGrant{}, fmt.Errorf("%q is not a network (want 10.1.0.0/16[=biz:2+biz:3])", strings.TrimSpace(pfx))
		}
	}
	g := NetworkGrant{Prefix: p.Masked(), Role: RoleOperator}
	if scopes != "" {
		if g.Scopes, err = ParseScopes("scopes", strings.Split(scopes, "+")); err != nil {
			return NetworkGrant{}, fmt.Errorf("%q: %w", s, err)
		}
	}
	return g, nil
}

// Auth configures the authentication step.
type Auth struct {
	// Token is the admin token: valid wherever an admin credential is asked for.
	Token string
	// Identities holds the stored credentials; a zero store holds none.
	Identities IdentityStore
	// Networks admit octans clients without credentials.
	Networks []NetworkGrant
	// Rate and Burst bound each credential's requests (a token bucket per
	// credential or, for network grants, per source address); Rate 0 is
	// no limit. The admin token is exempt.
	Rate  float64
	Burst int
}

// sourceOf is the request's peer address. X-Forwarded-For is not trusted:
// network grants must not be claimable by a header.
func sourceOf(c echo.Context) string {
	host, _, err := net.SplitHostPort(c.Request().RemoteAddr)
	if err != nil {
		return c.Request().RemoteAddr
	}
	return host
}

// AuthenticateBearer finds who a bearer token stands for.
func (c *Core) AuthenticateBearer(ctx context.Context, token string) (Principal, error) {
	if c.Admin(token) {
		return Principal{Actor: "admin", Role: RoleAdmin, Kind: KindAdminToken}, nil
	}
	if token == "" || c.auth.Identities.KV == nil {
		return Principal{}, fmt.Errorf("missing or wrong bearer token: %w", ErrUnauthorized)
	}
	cr, err := c.auth.Identities.Verify(ctx, KindBearer, "", token, time.Now())
	if errors.Is(err, ErrNoCredential) {
		return Principal{}, fmt.Errorf("missing, wrong, revoked or expired bearer token: %w", ErrUnauthorized)
	}
	if err != nil {
		return Principal{}, err
	}
	return Principal{Actor: cr.Owner, Role: cr.Role, Scopes: cr.Scopes, Kind: KindBearer, CredentialID: cr.ID}, nil
}

// AuthenticateApp finds the BlueKing app that code and secret open; trusted
// says it may act as the users it names. The admin token opens any code.
func (c *Core) AuthenticateApp(ctx context.Context, code, secret string) (p Principal, trusted bool, err error) {
	if c.Admin(secret) {
		return Principal{Actor: code, Role: RoleAdmin, Kind: KindAdminToken}, true, nil
	}
	if c.auth.Identities.KV == nil {
		return Principal{}, false, ErrNoCredential
	}
	cr, err := c.auth.Identities.Verify(ctx, KindBKApp, code, secret, time.Now())
	if err != nil {
		return Principal{}, false, err
	}
	return Principal{Actor: cr.Owner, Role: cr.Role, Scopes: cr.Scopes, Kind: KindBKApp, CredentialID: "bk_app." + cr.ID},
		cr.TrustedUserAssertion, nil
}

// AuthenticateNetwork admits a request without credentials when its source
// lies in a network an admin listed; the first matching grant wins.
func (c *Core) AuthenticateNetwork(ec echo.Context) (Principal, bool) {
	src := sourceOf(ec)
	a, err := netip.ParseAddr(src)
	if err != nil {
		return Principal{}, false
	}
	a = a.Unmap()
	for _, g := range c.auth.Networks {
		if g.Prefix.Contains(a) {
			return Principal{Actor: "network:" + g.Prefix.String(), Role: g.Role, Scopes: g.Scopes, Kind: KindNetwork,
				CredentialID: "net:" + a.String()}, true
		}
	}
	return Principal{}, false
}

// Admit completes a principal a surface authenticated (its surface, source
// and correlation id), applies its rate limit and puts it in the request's
// context. A limited request is refused with ErrRateLimited and a
// Retry-After header.
func (c *Core) Admit(ec echo.Context, p Principal, surface string) error {
	p.Surface, p.Source = surface, sourceOf(ec)
	p.CorrelationID = ec.Request().Header.Get("X-Correlation-ID")
	if p.Kind != KindAdminToken {
		if wait, ok := c.limits.allow(p.CredentialID); !ok {
			secs := int((wait + time.Second - 1) / time.Second)
			ec.Response().Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
			c.limited.WithLabelValues(surface).Inc()
			return fmt.Errorf("rate limit of this credential exceeded; retry in %d s: %w", max(secs, 1), ErrRateLimited)
		}
	}
	ec.Set("principal", &p)
	ec.SetRequest(ec.Request().WithContext(WithPrincipal(ec.Request().Context(), &p)))
	return nil
}

// ErrRateLimited refuses a request over its credential's rate (HTTP 429).
var ErrRateLimited = errors.New("too many requests")

// BearerAuth is the authentication step of surfaces whose clients send
// "Authorization: Bearer <token>" (the admin token or a stored one).
func (c *Core) BearerAuth(surface string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(ec echo.Context) error {
			if _, ok := PrincipalFrom(ec.Request().Context()); ok {
				return next(ec)
			}
			token, _ := strings.CutPrefix(ec.Request().Header.Get("Authorization"), "Bearer ")
			p, err := c.AuthenticateBearer(ec.Request().Context(), token)
			if err != nil {
				return err
			}
			if err := c.Admit(ec, p, surface); err != nil {
				return err
			}
			return next(ec)
		}
	}
}

// RequireAdmin is the middleware of admin-only routes of the native API:
// it authenticates the bearer token (unless an earlier step did) and
// refuses any other role with 403.
func (c *Core) RequireAdmin() echo.MiddlewareFunc {
	auth := c.BearerAuth("native")
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return auth(func(ec echo.Context) error {
			if err := Require(ec.Request().Context(), RoleAdmin, nil, false); err != nil {
				return err
			}
			return next(ec)
		})
	}
}

// Admin reports whether secret is the admin credential (in constant time);
// an empty secret never is.
func (c *Core) Admin(secret string) bool {
	return c.auth.Token != "" && secret != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(c.auth.Token)) == 1
}

// Identities is the credential store, for the routes that manage it.
func (c *Core) Identities() IdentityStore { return c.auth.Identities }

// limiter keeps a token bucket per credential.
type limiter struct {
	mu    sync.Mutex
	limit rate.Limit
	burst int
	m     map[string]*rate.Limiter
}

// maxLimiters bounds the buckets kept; past it they start afresh (a
// caller gains at most one burst).
const maxLimiters = 100_000

func newLimiter(r float64, burst int) *limiter {
	if burst < 1 {
		burst = max(1, int(r))
	}
	return &limiter{limit: rate.Limit(r), burst: burst, m: map[string]*rate.Limiter{}}
}

// allow takes a token of key's bucket, or says how long until one is there.
func (l *limiter) allow(key string) (time.Duration, bool) {
	if l == nil || l.limit <= 0 {
		return 0, true
	}
	l.mu.Lock()
	lim, ok := l.m[key]
	if !ok {
		if len(l.m) >= maxLimiters {
			l.m = map[string]*rate.Limiter{}
		}
		lim = rate.NewLimiter(l.limit, l.burst)
		l.m[key] = lim
	}
	l.mu.Unlock()
	now := time.Now()
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}
