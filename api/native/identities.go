package native

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/schemas"
)

// Identity management: bearer tokens (/v1/tokens) and BlueKing apps
// (/v1/bk-apps), admins only. A secret is answered once, when it is made.

func (s *Surface) registerIdentities(g *echo.Group, admin echo.MiddlewareFunc) {
	g.POST("/tokens", s.createToken, admin)
	g.GET("/tokens", s.listCredentials(api.KindBearer), admin)
	g.DELETE("/tokens/:id", s.revokeCredential(api.KindBearer), admin)
	g.POST("/bk-apps", s.createBKApp, admin)
	g.GET("/bk-apps", s.listCredentials(api.KindBKApp), admin)
	g.DELETE("/bk-apps/:id", s.revokeCredential(api.KindBKApp), admin)
}

// Expiry is the optional lifetime of a new credential: a ttl in Go
// duration syntax ("720h") or an RFC 3339 expires_at, not both. Without
// either the credential lasts until revoked.
type Expiry struct {
	TTL       string `json:"ttl,omitempty"`
	ExpiresAt string `json:"expires_at,omitempty"`
}

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	User        string   `json:"user"`
	Role        string   `json:"role"`
	Scopes      []string `json:"scopes"`
	Description string   `json:"description"`
	Expiry
}

// TokenResponse answers a new token: the only time its secret is shown.
type TokenResponse struct {
	api.CredentialView
	Token string `json:"token"`
}

// BKAppRequest is the body of POST /v1/bk-apps.
type BKAppRequest struct {
	AppCode string   `json:"bk_app_code"`
	Role    string   `json:"role"`
	Scopes  []string `json:"scopes"`
	// TrustedUserAssertion lets the app act as the bk_username it names.
	TrustedUserAssertion bool   `json:"trusted_user_assertion"`
	Description          string `json:"description"`
	Expiry
}

// BKAppResponse answers a new app: the only time its secret is shown.
type BKAppResponse struct {
	api.CredentialView
	AppSecret string `json:"bk_app_secret"`
}

// newCredential validates the parts every credential has.
func newCredential(c echo.Context, kind api.CredentialKind, role string, scopes []string, exp Expiry) (api.NewCredential, error) {
	var fe schemas.FieldErrors
	r, err := api.ParseRole(role)
	if err != nil {
		fe.Add("role", "%v", err)
	}
	scs, err := api.ParseScopes("scopes", scopes)
	if err != nil {
		fe = append(fe, err.(schemas.FieldErrors)...)
	}
	var until *time.Time
	if exp.ExpiresAt != "" {
		at, err := time.Parse(time.RFC3339, exp.ExpiresAt)
		if err != nil {
			fe.Add("expires_at", "%q: want an RFC 3339 time, like 2027-01-31T00:00:00Z", exp.ExpiresAt)
		}
		until = &at
	}
	return api.NewCredential{Kind: kind, Role: r, Scopes: scs, CreatedBy: api.PrincipalOf(c.Request().Context()).Actor,
		TTL: exp.TTL, ExpiresAt: until}, fe.Err()
}

func (s *Surface) createToken(c echo.Context) error {
	var req TokenRequest
	if err := api.DecodeStrict(c, &req); err != nil {
		return err
	}
	n, err := newCredential(c, api.KindBearer, req.Role, req.Scopes, req.Expiry)
	if err != nil {
		return err
	}
	n.Owner, n.Description = req.User, req.Description
	cr, secret, err := s.core.Identities().Create(c.Request().Context(), n, time.Now())
	if err != nil {
		return err
	}
	s.core.Audit(c.Request().Context(), api.AuditCredentialCreate, cr.ID,
		map[string]any{"kind": cr.Kind, "owner": cr.Owner, "role": cr.Role, "scopes": api.ScopeStrings(cr.Scopes), "expires_at": cr.ExpiresAt})
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusCreated, TokenResponse{CredentialView: cr.View(), Token: secret})
}

func (s *Surface) createBKApp(c echo.Context) error {
	var req BKAppRequest
	if err := api.DecodeStrict(c, &req); err != nil {
		return err
	}
	if req.Role == "" {
		req.Role = string(api.RoleOperator)
	}
	n, err := newCredential(c, api.KindBKApp, req.Role, req.Scopes, req.Expiry)
	if err != nil {
		return err
	}
	n.AppCode, n.TrustedUserAssertion, n.Description = req.AppCode, req.TrustedUserAssertion, req.Description
	cr, secret, err := s.core.Identities().Create(c.Request().Context(), n, time.Now())
	if err != nil {
		return err
	}
	s.core.Audit(c.Request().Context(), api.AuditCredentialCreate, cr.ID, map[string]any{"kind": cr.Kind, "owner": cr.Owner,
		"role": cr.Role, "scopes": api.ScopeStrings(cr.Scopes), "trusted_user_assertion": cr.TrustedUserAssertion, "expires_at": cr.ExpiresAt})
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusCreated, BKAppResponse{CredentialView: cr.View(), AppSecret: secret})
}

func (s *Surface) listCredentials(kind api.CredentialKind) echo.HandlerFunc {
	return func(c echo.Context) error {
		all, err := s.core.Identities().List(c.Request().Context(), kind)
		if err != nil {
			return err
		}
		out := make([]api.CredentialView, 0, len(all))
		for _, cr := range all {
			out = append(out, cr.View())
		}
		return c.JSON(http.StatusOK, ListResponse[api.CredentialView]{Items: out, Total: len(out), Page: 1, Size: len(out)})
	}
}

func (s *Surface) revokeCredential(kind api.CredentialKind) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctx := c.Request().Context()
		cr, err := s.core.Identities().Revoke(ctx, kind, c.Param("id"), api.PrincipalOf(ctx).Actor)
		if err != nil {
			return err
		}
		s.core.Audit(ctx, api.AuditCredentialRevoke, cr.ID, map[string]any{"kind": cr.Kind, "owner": cr.Owner})
		return c.JSON(http.StatusOK, cr.View())
	}
}
