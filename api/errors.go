package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/fleetjob/fleetjob/schemas"
)

// ErrUnauthorized marks a request without the credentials its route needs.
var ErrUnauthorized = errors.New("missing or wrong credentials")

// ErrTooLarge marks a request whose command would be larger than the NATS
// servers accept (HTTP 413: retrying cannot help). It is invalid input.
var ErrTooLarge = fmt.Errorf("too large: %w", schemas.ErrInvalid)

// StatusOf maps known errors to the HTTP status the native API answers
// them with; 0 means internal. Compatibility surfaces start from it and
// apply their originals' rules.
func StatusOf(err error) int {
	var he *echo.HTTPError
	switch {
	case errors.As(err, &he):
		return he.Code
	case errors.Is(err, ErrUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrRateLimited):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrKeyReused):
		return http.StatusUnprocessableEntity
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
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

// Message is the text of err a client may read (schemas.Message, or the
// message of an echo HTTP error).
func Message(err error) string {
	var he *echo.HTTPError
	if errors.As(err, &he) {
		return fmt.Sprint(he.Message)
	}
	return schemas.Message(err)
}

// Problem is an RFC 9457 problem document.
type Problem struct {
	Type   string               `json:"type"`
	Title  string               `json:"title"`
	Status int                  `json:"status"`
	Detail string               `json:"detail,omitempty"`
	Errors []schemas.FieldError `json:"errors,omitempty"`
}

// WriteProblem answers err as an RFC 9457 problem with its 4xx or 5xx
// status. An unknown error is logged once with the correlation id and
// answered 500 without internals.
func WriteProblem(c echo.Context, log *slog.Logger, err error) {
	code := StatusOf(err)
	p := Problem{Type: "about:blank", Status: code, Detail: Message(err)}
	var fe schemas.FieldErrors
	if errors.As(err, &fe) {
		p.Errors = fe
		p.Detail = "the request has invalid fields"
	}
	if code == 0 {
		log.Error("request failed", "path", c.Request().URL.Path, "correlation_id", c.Request().Header.Get("X-Correlation-ID"), "err", err)
		p.Status, p.Detail = http.StatusInternalServerError, "internal error"
	}
	p.Title = http.StatusText(p.Status)
	if p.Status == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="fleetjob"`)
	}
	b, _ := json.Marshal(p)
	_ = c.Blob(p.Status, "application/problem+json", b)
}
