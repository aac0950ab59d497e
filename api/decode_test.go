package api

import (
	"errors"
	"strings"
	"testing"

	"github.com/fleetjob/fleetjob/schemas"
)

func TestDecodeErrorsNameTheFieldInTheClientsWords(t *testing.T) {
	type host struct {
		IP string `json:"ip"`
	}
	type step struct {
		Timeout int    `json:"timeout"`
		Targets []host `json:"targets"`
	}
	type req struct {
		Name  string `json:"name"`
		Steps []step `json:"steps"`
	}
	for _, c := range []struct{ body, field, reason string }{
		{`{"name":1}`, "name", "expected a string, got number"},
		{`{"steps":[{"timeout":1},{"timeout":"x"}]}`, "steps[1].timeout", "expected a whole number, got string"},
		{`{"steps":[{"targets":[{"ip":"a"},{"ip":"b"},{"ip":3}]}]}`, "steps[0].targets[2].ip", "expected a string, got number"},
		{`{"steps":{}}`, "steps", "expected an array, got object"},
		{`{"steps":[{"timeout":1.5}]}`, "steps[0].timeout", "expected a whole number, got number 1.5"},
		{`{"colour":1}`, "colour", "unknown field"},
	} {
		var v req
		err := DecodeStrictBytes([]byte(c.body), &v)
		var fe schemas.FieldErrors
		if !errors.As(err, &fe) || len(fe) != 1 {
			t.Errorf("%s: got %v, want a field error", c.body, err)
			continue
		}
		if fe[0].Field != c.field || fe[0].Reason != c.reason {
			t.Errorf("%s: got %s: %s, want %s: %s", c.body, fe[0].Field, fe[0].Reason, c.field, c.reason)
		}
	}
	for _, body := range []string{`{`, `{"name":"a"} x`, `[1]x`} {
		var v req
		if err := DecodeStrictBytes([]byte(body), &v); !errors.Is(err, ErrMalformed) && !errors.Is(err, schemas.ErrInvalid) {
			t.Errorf("%s: got %v, want malformed", body, err)
		}
	}
}

func TestDecodeNamesTheValueATypesOwnDecoderRefused(t *testing.T) {
	type step struct {
		Targets []schemas.Host `json:"targets"`
	}
	type req struct {
		Concurrency int            `json:"concurrency"`
		Targets     []schemas.Host `json:"targets"`
		Steps       []step         `json:"steps"`
	}
	for _, c := range []struct{ body, field, reason string }{
		{`{"concurrency":7,"targets":["10.0.0.1", 7]}`, "targets[1]", "not 7"},
		{`{"targets":["10.0.0.1", {"ip":"1.2.3.4","cloud":1}]}`, "targets[1]", `not "cloud"`},
		{`{"targets":["10.0.0.1"],"steps":[{"targets":[]},{"targets":["10.0.0.2", {"ip": "1.2.3.4", "cloud_id": "2"}]}]}`, "steps[1].targets[1]", `cloud_id is a whole number, not "2"`},
	} {
		var v req
		err := DecodeStrictBytes([]byte(c.body), &v)
		var fe schemas.FieldErrors
		if !errors.As(err, &fe) || len(fe) != 1 || fe[0].Field != c.field || !strings.Contains(fe[0].Reason, c.reason) {
			t.Errorf("%s: got %v, want %s: …%s", c.body, err, c.field, c.reason)
		}
	}
}
