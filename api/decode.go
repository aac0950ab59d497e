package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/fleetjob/fleetjob/schemas"
)

// errMalformed marks a body that is not the JSON it should be.
var errMalformed = fmt.Errorf("malformed JSON: %w", schemas.ErrInvalid)

// decodeStrict reads the JSON body into v, refusing unknown fields, wrong
// types and trailing data, with an error that names the field.
func decodeStrict(c echo.Context, v any) error {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var he *echo.HTTPError
		if errors.As(err, &he) {
			return he
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) || strings.Contains(err.Error(), "too large") {
			return echo.NewHTTPError(http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", MaxBodyBytes))
		}
		return fmt.Errorf("read body: %w", errMalformed)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return fmt.Errorf("empty body: %w", errMalformed)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describeJSONError(err)
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the JSON object: %w", errMalformed)
	}
	return nil
}

// describeJSONError turns a decoder error into a field error where it can.
func describeJSONError(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "body"
		}
		return schemas.Invalid(field, "expected %s, got %s", te.Type.String(), te.Value)
	case errors.As(err, &se):
		return fmt.Errorf("%v at offset %d: %w", se, se.Offset, errMalformed)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return schemas.Invalid(strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`), "unknown field")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("truncated JSON: %w", errMalformed)
	}
	return fmt.Errorf("%v: %w", err, errMalformed)
}
