package native

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/schemas"
)

// Execution account aliases: admins map, per scope ("global" for the
// scope-less set), the aliases jobs name to OS users.

// registerAccounts adds the /v1/accounts routes.
func (s *Surface) registerAccounts(g *echo.Group, admin echo.MiddlewareFunc) {
	g.GET("/accounts", s.listAccounts, admin)
	g.GET("/accounts/:scope", s.listScopeAccounts, admin)
	g.PUT("/accounts/:scope/:alias", s.putAccount, admin)
	g.GET("/accounts/:scope/:alias", s.getAccount, admin)
	g.DELETE("/accounts/:scope/:alias", s.deleteAccount, admin)
}

// AccountRequest is the body of PUT /v1/accounts/{scope}/{alias}: the OS
// user the alias runs as, or deny to forbid the alias in the scope (even
// when the global set has it).
type AccountRequest struct {
	OSUser string `json:"os_user"`
	Deny   bool   `json:"deny"`
	// BKAccountID is the id BlueKing clients name the alias by.
	BKAccountID int64 `json:"bk_account_id"`
}

func (s *Surface) putAccount(c echo.Context) error {
	var req AccountRequest
	if err := api.DecodeStrict(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context()
	a, err := s.core.PutAccount(ctx, schemas.Account{
		Scope: c.Param("scope"), Alias: c.Param("alias"), OSUser: req.OSUser, Deny: req.Deny, BKAccountID: req.BKAccountID}, actor(c))
	if err != nil {
		return err
	}
	s.core.Audit(ctx, api.AuditAccountSet, a.Scope+"/"+a.Alias, map[string]any{"os_user": a.OSUser, "deny": a.Deny, "bk_account_id": a.BKAccountID})
	return c.JSON(http.StatusOK, a)
}

// listAccounts answers every set's aliases, or one set's with ?scope=.
func (s *Surface) listAccounts(c echo.Context) error {
	scope, all := c.QueryParam("scope"), !c.QueryParams().Has("scope")
	items, err := s.core.Accounts(c.Request().Context(), scope, all)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, pageOf(items, 1, max(len(items), 1)))
}

func (s *Surface) listScopeAccounts(c echo.Context) error {
	items, err := s.core.Accounts(c.Request().Context(), c.Param("scope"), false)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, pageOf(items, 1, max(len(items), 1)))
}

func (s *Surface) getAccount(c echo.Context) error {
	items, err := s.core.Accounts(c.Request().Context(), c.Param("scope"), false)
	if err != nil {
		return err
	}
	for _, a := range items {
		if a.Alias == c.Param("alias") {
			return c.JSON(http.StatusOK, a)
		}
	}
	return schemas.NotFound("no account alias %q in %s", c.Param("alias"), c.Param("scope"))
}

func (s *Surface) deleteAccount(c echo.Context) error {
	ctx := c.Request().Context()
	if err := s.core.DeleteAccount(ctx, c.Param("scope"), c.Param("alias")); err != nil {
		return err
	}
	s.core.Audit(ctx, api.AuditAccountDelete, c.Param("scope")+"/"+c.Param("alias"), nil)
	return c.NoContent(http.StatusNoContent)
}
