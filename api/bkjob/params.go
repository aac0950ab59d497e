package bkjob

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/schemas"
)

// Parameters of the BlueKing surface: a JSON body, or a query string read
// as a JSON object of strings, decoded strictly into types that take
// numbers and booleans written either way.

// bkParams returns the request's parameters as one JSON object.
func bkParams(c echo.Context) ([]byte, error) {
	r := c.Request()
	if r.Method == http.MethodGet {
		return queryJSON(r.URL.Query())
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		var he *echo.HTTPError
		switch {
		case errors.As(err, &he):
			return nil, he
		case errors.As(err, &mbe) || strings.Contains(err.Error(), "too large"):
			return nil, echo.NewHTTPError(http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", api.MaxBodyBytes))
		}
		return nil, fmt.Errorf("read body: %w", api.ErrMalformed)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if len(r.URL.RawQuery) > 0 {
			return queryJSON(r.URL.Query())
		}
		return nil, fmt.Errorf("empty body: %w", api.ErrMalformed)
	}
	return body, nil
}

// queryJSON turns a query string into a JSON object of strings; the
// parameter types below accept numbers and booleans written as strings.
func queryJSON(q url.Values) ([]byte, error) {
	m := make(map[string]string, len(q))
	for k, vs := range q {
		if len(vs) > 1 {
			return nil, &bkError{code: bkCodeInvalidParam, err: schemas.Invalid(k, "given %d times", len(vs))}
		}
		m[k] = vs[0]
	}
	return json.Marshal(m)
}

// decodeParams decodes parameters strictly (api.DecodeStrictBytes), with
// field paths in the request's own words.
func decodeParams(b []byte, v any) error {
	err := api.DecodeStrictBytes(b, v)
	var fe schemas.FieldErrors
	if errors.As(err, &fe) {
		for i := range fe {
			fe[i].Field = bkEmbedded.Replace(fe[i].Field)
		}
	}
	return err
}

// bkEmbedded drops the embedded structs' names that decode errors put in
// field paths.
var bkEmbedded = strings.NewReplacer("bkCommon.", "", "bkCredentials.", "", "bkHostRef.", "")

// bkInt is an integer parameter: a JSON number, or digits in a string (as
// query strings and some clients send them). Set says it was given; null
// and "" count as absent.
type bkInt struct {
	V   int64
	Set bool
}

func (n *bkInt) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	kind := "number"
	if s == "null" {
		*n = bkInt{}
		return nil
	}
	if strings.HasPrefix(s, `"`) {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s = strings.TrimSpace(s); s == "" {
			*n = bkInt{}
			return nil
		}
		kind = "string"
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return &json.UnmarshalTypeError{Value: kind + " " + strconv.Quote(clip(s, 40)), Type: reflect.TypeFor[int64]()}
	}
	*n = bkInt{V: v, Set: true}
	return nil
}

// bkString is a string parameter that also takes a JSON number (bk_scope_id
// is documented as a string, yet clients send numbers).
type bkString string

func (s *bkString) UnmarshalJSON(b []byte) error {
	t := string(bytes.TrimSpace(b))
	switch {
	case t == "null":
		*s = ""
	case strings.HasPrefix(t, `"`):
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = bkString(strings.TrimSpace(v))
	case len(t) > 0 && (t[0] == '-' || t[0] >= '0' && t[0] <= '9'):
		*s = bkString(t)
	default:
		return &json.UnmarshalTypeError{Value: clip(t, 40), Type: reflect.TypeFor[string]()}
	}
	return nil
}

// bkBool is a boolean parameter: true/false, as JSON or in a string.
type bkBool struct {
	V, Set bool
}

func (f *bkBool) UnmarshalJSON(b []byte) error {
	t := strings.ToLower(strings.Trim(string(bytes.TrimSpace(b)), `"`))
	switch t {
	case "null", "":
		*f = bkBool{}
	case "true", "1":
		*f = bkBool{V: true, Set: true}
	case "false", "0":
		*f = bkBool{Set: true}
	default:
		return &json.UnmarshalTypeError{Value: strconv.Quote(clip(t, 40)), Type: reflect.TypeFor[bool]()}
	}
	return nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
