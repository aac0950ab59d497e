package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/fleetjob/fleetjob/schemas"
)

// FuzzDecodeStrict feeds arbitrary bodies to the strict decoder every
// surface uses (decode.go, jsonpath.go), into a job spec: a refusal is a
// 400 with a message, field errors name their field; a body it accepts
// encodes and decodes to the same value.
func FuzzDecodeStrict(f *testing.F) {
	for _, s := range []string{
		`{"name":"hello","targets":["127.0.0.1"],"concurrency":2,"agent_wait":30,"steps":[{"script":{"interpreter":"bash","content":"echo $GREETING","args":[],"env":{"GREETING":"hi"}},"timeout":60}]}`,
		`{"name":"release 42","targets":["127.0.0.1"],"steps":[{"file":{"sources":[{"hosts":["127.0.0.1"],"paths":["/tmp/d/*.txt"]}],"destination":"/tmp/r","mode":"0644"}},{"script":{"content":"x"},"rolling":{"expr":"1 50% 100%","mode":3}}]}`,
		`{"steps":[{"targets":[{"ip":"a"},{"ip":"b"},{"ip":3}]}]}`, `{"steps":[{"timeout":1.5}]}`, `{"steps":{}}`, `{"colour":1}`,
		`{"targets":[{"cloud_id":0,"ip":"1.1.1.1","x":1}]}`, `{"targets":[true]}`, `{"NAME":"x","Steps":[]}`, `{"name":"a"} {}`,
		`{"name":"a"}}`, `{"name":"\ud800"}`, `{"extra":{"k":1}}`, `{"concurrency":1e400}`, `{"concurrency":-0}`, `[`, ``, `null`,
		`{"steps":[{"script":null,"file":{"sources":[{"hosts":[{"cloud_id":"x"}]}]}}]}`,
		strings.Repeat("[", 10001), `{"a":` + strings.Repeat(`{"a":`, 200) + `1` + strings.Repeat("}", 201),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var spec schemas.JobSpec
		err := DecodeStrictBytes(body, &spec)
		if err != nil {
			if StatusOf(err) != http.StatusBadRequest || Message(err) == "" {
				t.Fatalf("%q: %v answers %d with message %q, want 400 with a message", body, err, StatusOf(err), Message(err))
			}
			var fe schemas.FieldErrors
			if errors.As(err, &fe) {
				for _, e := range fe {
					if e.Field == "" || e.Reason == "" {
						t.Errorf("%q: field error %+v", body, e)
					}
				}
			} else if !errors.Is(err, ErrMalformed) {
				t.Errorf("%q: %v is neither a field error nor malformed JSON", body, err)
			}
			return
		}
		out, err := json.Marshal(&spec)
		if err != nil {
			t.Fatalf("encode %+v: %v", spec, err)
		}
		var back schemas.JobSpec
		if err := DecodeStrictBytes(out, &back); err != nil {
			t.Fatalf("%q decoded, but its encoding %s does not: %v", body, out, err)
		}
		if diff := cmp.Diff(back, spec, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%q: round trip (-back +first):\n%s", body, diff)
		}
	})
}

// FuzzPathAt: the path of any offset of any body is found without a panic,
// and in a valid document it names keys that are in it.
func FuzzPathAt(f *testing.F) {
	f.Add([]byte(`{"steps":[{"timeout":1},{"timeout":"x"}]}`), int64(35))
	f.Add([]byte(`{"a":[[1,2],{"b":[3]}]}`), int64(17))
	f.Add([]byte(`[`), int64(5))
	f.Add([]byte(`}`), int64(0))
	f.Fuzz(func(t *testing.T, body []byte, offset int64) {
		p := pathAt(body, offset)
		if p == "" || !json.Valid(body) {
			return
		}
		for _, seg := range strings.FieldsFunc(arrayIndex.ReplaceAllString(p, "."), func(r rune) bool { return r == '.' }) {
			if !strings.Contains(string(body), seg) && !strings.Contains(string(compact(body)), seg) {
				// keys are written as the body spells them (escapes aside)
				var anyKey bool
				for _, r := range seg {
					anyKey = anyKey || r == '\\' || r > 127 || r < 32
				}
				if !anyKey && !strings.Contains(string(body), `\`) {
					t.Errorf("path %q of %q names %q, which is not in it", p, body, seg)
				}
			}
		}
	})
}
