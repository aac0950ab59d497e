package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// Fuzz tests of what every surface decodes through: the job spec's
// Normalize, rolling expressions and hosts.

// FuzzJobSpec decodes arbitrary JSON into a JobSpec and normalizes it: a
// refusal names its fields and wraps ErrInvalid; an accepted spec is
// stable (encoding it, decoding it and normalizing it again changes
// nothing), as the stored spec must be.
func FuzzJobSpec(f *testing.F) {
	if b, err := os.ReadFile("testdata/submit.golden.json"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		`{"name":"hello","targets":["127.0.0.1"],"concurrency":2,"agent_wait":30,"steps":[{"script":{"interpreter":"bash","content":"echo $GREETING","args":[],"env":{"GREETING":"hi"}},"timeout":60}]}`,
		`{"name":"release 42","targets":["127.0.0.1"],"steps":[{"name":"build","script":{"content":"date"}},{"name":"ship","file":{"sources":[{"hosts":["127.0.0.1"],"paths":["/tmp/d/*.txt"]}],"destination":"/tmp/r","mode":"0644","download_limit_mb":50}},{"name":"restart","script":{"content":"echo"},"timeout":120,"rolling":{"expr":"1 50% 100%","mode":3},"max_fail_percent":25}]}`,
		`{"steps":[{"file":{"sources":[{"artifact":"a/b.tgz"},{"hosts":[{"cloud_id":2,"ip":"::ffff:10.0.0.1"}],"paths":["REGEX:/x/.*"]}],"destination":"/opt/app/"}}],"targets":[{"cloud_id":0,"ip":" 10.0.0.1 "}]}`,
		`{"steps":[{"type":"file","script":{"content":"x"}}],"targets":["1.2.3.4"],"scope":{"type":"biz","id":"1"},"callback_url":"http://x/y"}`,
		`{"steps":[{"script":{"content":"x"},"rolling":{"expr":"1 *2","mode":0},"on_failure":"continue"}],"targets":["1.2.3.4","1.2.3.4"]}`,
		`{"name":"  ","steps":[],"targets":[]}`, `{}`, `null`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var spec JobSpec
		if json.Unmarshal(body, &spec) != nil {
			return
		}
		err := spec.Normalize()
		if err != nil {
			var fe FieldErrors
			if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) || len(fe) == 0 {
				t.Fatalf("Normalize: %v (%T), want FieldErrors", err, err)
			}
			for _, e := range fe {
				if e.Field == "" || e.Reason == "" {
					t.Errorf("field error %+v without its field or reason", e)
				}
			}
			return
		}
		b, err := json.Marshal(&spec)
		if err != nil {
			t.Fatalf("marshal a normalized spec: %v", err)
		}
		var again JobSpec
		if err := json.Unmarshal(b, &again); err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		if err := again.Normalize(); err != nil {
			t.Fatalf("a normalized spec %s is refused the second time: %v", b, err)
		}
		if diff := cmp.Diff(again, spec, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("Normalize is not stable (-again +first):\n%s", diff)
		}
	})
}

// FuzzRolling checks RollingBatches: batch ends strictly increase and end
// at n, at most MaxRollingBatches of them; an expression that parses makes
// batches for one host.
func FuzzRolling(f *testing.F) {
	for _, s := range []string{"1 50% 100%", "1 10% 30% 100%", "2", "25%", "1 +2", "1 *2", "100%", "10 20 20 20 100%",
		"0", "101%", "+1", "1 +2 3", "-1", "1 *9223372036854775807", "2 *4611686018427387904", "1 +9223372036854775807", "1%", "1 ++2", ""} {
		f.Add(s, 100)
	}
	f.Fuzz(func(t *testing.T, expr string, n int) {
		n = min(max(n, 0), MaxHostsPerJob)
		ends, err := RollingBatches(expr, n)
		if _, perr := parseRolling(expr); (perr != nil) != (err != nil && !strings.Contains(err.Error(), "batches of")) {
			t.Fatalf("parse error %v, batches error %v", perr, err)
		}
		if err != nil {
			return
		}
		if len(ends) > MaxRollingBatches {
			t.Errorf("%d batches", len(ends))
		}
		prev := 0
		for _, e := range ends {
			if e <= prev {
				t.Fatalf("%q over %d hosts: ends %v do not increase", expr, n, ends)
			}
			prev = e
		}
		if prev != n {
			t.Errorf("%q over %d hosts: ends %v do not end at n", expr, n, ends)
		}
		if _, err := RollingBatches(expr, 1); err != nil {
			t.Errorf("%q parses but cannot roll one host: %v", expr, err)
		}
	})
}

// FuzzHost checks both ways a host is read: a host that decodes and
// validates encodes and decodes to itself, and ParseHost reads back its
// own String form.
func FuzzHost(f *testing.F) {
	for _, s := range []string{`"10.0.0.1"`, `{"cloud_id":0,"ip":"127.0.0.1"}`, `{"cloud_id":2,"ip":"::ffff:10.0.0.1"}`, `{"CLOUD_ID":1,"Ip":"fe80::1"}`,
		`{"ip":1}`, `{"cloud_id":"1"}`, `{"host":"x"}`, `[1]`, `null`, `"fe80::1%eth0"`, `{"cloud_id":-1,"ip":"1.1.1.1"}`} {
		f.Add([]byte(s), "0:10.0.0.1")
	}
	f.Add([]byte(`"1.2.3.4"`), "2:::1")
	f.Add([]byte(`"1.2.3.4"`), "fe80::1%eth0")
	f.Add([]byte(`"1.2.3.4"`), "3:[fe80::1]")
	f.Add([]byte(`"1.2.3.4"`), "[::ffff:1.2.3.4]")
	f.Fuzz(func(t *testing.T, b []byte, s string) {
		if fast, ok := canonicalHost(b); ok && json.Valid(b) {
			if slow, err := decodeHostObject(b); err != nil || slow != fast {
				t.Errorf("%s: the canonical form reads %+v, the general path %+v (%v)", b, fast, slow, err)
			}
		}
		var h Host
		if err := json.Unmarshal(b, &h); err == nil && h.Validate() == nil {
			out, _ := json.Marshal(h)
			var back Host
			if err := json.Unmarshal(out, &back); err != nil || back.Validate() != nil || back != h {
				t.Errorf("%s decodes to %+v, which encodes to %s and decodes to %+v (%v)", b, h, out, back, err)
			}
		} else if err != nil {
			var ve *ValueError
			var se *json.SyntaxError
			var te *json.UnmarshalTypeError
			if !errors.As(err, &ve) && !errors.As(err, &se) && !errors.As(err, &te) {
				t.Errorf("%s: error %v (%T) is neither a ValueError nor a JSON error", b, err, err)
			}
		}
		h, err := ParseHost(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseHost(%q): %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		form := h.String()
		if strings.Contains(h.IP, ":") { // IPv6: only the bracketed form carries a cloud
			form = fmt.Sprintf("%d:[%s]", h.CloudID, h.IP)
		}
		back, err := ParseHost(form)
		if err != nil || back != h {
			t.Errorf("ParseHost(%q) = %+v, written %q, reads back as %+v, %v", s, h, form, back, err)
		}
	})
}
