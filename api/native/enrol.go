package native

import (
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/fleetjob/fleetjob/api"
)

// registerEnrol adds the enrolment routes: tokens and revocation for
// admins, and POST /v1/enrol, which an agent authenticates with its
// enrolment token alone.
func (s *Surface) registerEnrol(g *echo.Group, admin echo.MiddlewareFunc) {
	if s.core.Enrol == nil {
		return
	}
	g.POST("/enrolments", s.createEnrolToken, admin)
	g.POST("/enrol", s.enrol)
	g.POST("/agents/:id/revoke", s.revokeAgent, admin)
	g.GET("/agents/:id/enrolment", s.agentEnrolment, admin)
}

func (s *Surface) createEnrolToken(c echo.Context) error {
	var req api.TokenRequest
	if err := api.DecodeStrict(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context()
	resp, err := s.core.Enrol.CreateToken(ctx, req, actor(c), time.Now())
	if err != nil {
		return err
	}
	s.core.Audit(ctx, api.AuditEnrolmentCreate, req.Agent, map[string]any{"scope": req.Scope, "hosts": len(req.Hosts), "ttl": req.TTL})
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusCreated, resp)
}

// enrol checks the enrolment token before it reads the body.
func (s *Surface) enrol(c echo.Context) error {
	ctx := c.Request().Context()
	tok, _ := strings.CutPrefix(c.Request().Header.Get("Authorization"), "Bearer ")
	g, err := s.core.Enrol.Check(ctx, tok, time.Now())
	if err != nil {
		return err
	}
	var req api.EnrolRequest
	if err := api.DecodeStrict(c, &req); err != nil {
		return err
	}
	resp, err := s.core.Enrol.Enrol(ctx, g, req, time.Now())
	if err != nil {
		return err
	}
	s.core.Audit(ctx, api.AuditAgentEnrol, resp.Agent, map[string]any{"scope": resp.Scope, "nkey": req.NKey, "source": c.RealIP()})
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusCreated, resp)
}

func (s *Surface) revokeAgent(c echo.Context) error {
	ctx := c.Request().Context()
	rec, err := s.core.Enrol.Revoke(ctx, c.Param("id"), actor(c), time.Now())
	if err != nil {
		return err
	}
	s.core.Audit(ctx, api.AuditAgentRevoke, rec.Agent, map[string]any{"nkey": rec.NKey})
	return c.JSON(http.StatusOK, rec)
}

func (s *Surface) agentEnrolment(c echo.Context) error {
	rec, err := s.core.Enrol.Enrolment(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, rec)
}

// actor names the caller (the principal's actor) in records it writes.
func actor(c echo.Context) string {
	if p, ok := api.PrincipalFrom(c.Request().Context()); ok && p.Actor != "" {
		return p.Actor
	}
	return "admin"
}
