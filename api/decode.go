package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/fleetjob/fleetjob/schemas"
)

// ErrMalformed marks a body that is not the JSON it should be.
var ErrMalformed = fmt.Errorf("malformed JSON: %w", schemas.ErrInvalid)

// DecodeStrict reads the JSON body into v, refusing unknown fields, wrong
// types and trailing data, with an error that names the field.
func DecodeStrict(c echo.Context, v any) error {
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
		return fmt.Errorf("read body: %w", ErrMalformed)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return fmt.Errorf("empty body: %w", ErrMalformed)
	}
	return DecodeStrictBytes(body, v)
}

// DecodeStrictBytes is DecodeStrict for a body already read.
func DecodeStrictBytes(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describeJSONError(body, err, reflect.TypeOf(v))
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the JSON object: %w", ErrMalformed)
	}
	return nil
}

// describeJSONError turns a decoder error into a field error where it can,
// in the client's words: JSON kinds, never Go types.
func describeJSONError(body []byte, err error, into reflect.Type) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	var ve *schemas.ValueError
	switch {
	case errors.As(err, &ve):
		field := valuePath(body, into, ve)
		if field == "" {
			field = "body"
		}
		return schemas.Invalid(field, "%s", ve.Reason)
	case errors.As(err, &te):
		// te.Field has no array indexes; the path at te.Offset has them
		// when it is the same field (custom decoders report other offsets).
		field := te.Field
		if p := pathAt(body, te.Offset); field == "" || arrayIndex.ReplaceAllString(p, "") == field {
			field = p
		}
		if field == "" {
			field = "body"
		}
		return schemas.Invalid(field, "expected %s, got %s", jsonKind(te.Type), te.Value)
	case errors.As(err, &se):
		return fmt.Errorf("%v at offset %d: %w", se, se.Offset, ErrMalformed)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		if name == "" { // {"": 1}: a field error needs a field
			return schemas.Invalid("body", `unknown field ""`)
		}
		return schemas.Invalid(name, "unknown field")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("truncated JSON: %w", ErrMalformed)
	}
	return fmt.Errorf("%s: %w", strings.TrimPrefix(err.Error(), "json: "), ErrMalformed)
}

var arrayIndex = regexp.MustCompile(`\[\d+\]`)

// jsonKind names what JSON a Go type decodes from.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "another type"
}
