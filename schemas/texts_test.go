package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// badRequests are job bodies as a client sends them, each wrong in one or
// more ways.
var badRequests = []struct{ name, body string }{
	{"script and file", `{"targets":["10.0.0.1"],"steps":[{"script":{"content":"x"},"file":{"sources":[{"artifact":"a"}],"destination":"/tmp"}}]}`},
	{"neither script nor file", `{"targets":["10.0.0.1"],"steps":[{"name":"empty"}]}`},
	{"type without its body", `{"targets":["10.0.0.1"],"steps":[{"type":"script"},{"type":"file"}]}`},
	{"type against the body", `{"targets":["10.0.0.1"],"steps":[{"type":"script","file":{"sources":[{"artifact":"a"}],"destination":"/tmp"}}]}`},
	{"unknown type", `{"targets":["10.0.0.1"],"steps":[{"type":"deploy"}]}`},
	{"no targets", `{"steps":[{"script":{"content":"x"}}]}`},
	{"no steps", `{"targets":["10.0.0.1"]}`},
	{"bad hosts", `{"targets":[{"cloud_id":-1,"ip":"10.0.0.1"},"10.0.0.300"],"steps":[{"script":{"content":"x"}},{"targets":["10.0.0.1","1","2","bad"],"script":{"content":"x"}}]}`},
	{"step limits", `{"targets":["10.0.0.1"],"concurrency":-1,"agent_wait":-1,"steps":[{"timeout":-1,"concurrency":-2,"on_failure":"retry","max_fail_percent":101,"script":{"content":"x"}},{"timeout":86401,"script":{"content":"x"}}]}`},
	{"script", `{"targets":["10.0.0.1"],"steps":[{"script":{"content":" ","interpreter":"ruby","env":{"A-B":"1"},"user":"root; rm"}}]}`},
	{"rolling", `{"targets":["10.0.0.1"],"steps":[{"script":{"content":"x"},"rolling":{"expr":"+1 2","mode":9}}]}`},
	{"file", `{"targets":["10.0.0.1"],"steps":[{"file":{"sources":[{"hosts":["10.0.0.2"],"paths":["/a"]},{},{"hosts":["10.0.0.2","x"],"paths":["/a","rel","REGEX:(","/[a"],"account":"Bad Name"},{"artifact":"../x"},{"artifact":"a","hosts":["10.0.0.2"]}],"destination":"rel","download_limit_mb":-1,"upload_limit_mb":-2,"mode":"999","owner":"A B"}}]}`},
	{"callback and scope", `{"targets":["10.0.0.1"],"steps":[{"script":{"content":"x"}}],"callback_url":"ftp://x","scope":{"type":"app","id":"1"}}`},
}

// TestValidationTexts pins every validation message (testdata/
// invalid.golden.txt, rewritten by go test -update), and checks that each
// names a JSON path into the client's own request and no Go type.
func TestValidationTexts(t *testing.T) {
	var b strings.Builder
	for _, c := range badRequests {
		var spec JobSpec
		if err := json.Unmarshal([]byte(c.body), &spec); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var fe FieldErrors
		if err := spec.Normalize(); !errors.As(err, &fe) {
			t.Fatalf("%s: got %v, want field errors", c.name, err)
		}
		var req any
		json.Unmarshal([]byte(c.body), &req)
		fmt.Fprintf(&b, "%s\n", c.name)
		for _, f := range fe {
			fmt.Fprintf(&b, "  %s: %s\n", f.Field, f.Reason)
			if !pathInRequest(req, f.Field) {
				t.Errorf("%s: %q is not a path into the request %s", c.name, f.Field, c.body)
			}
			if goish.MatchString(f.Reason) {
				t.Errorf("%s: %q names Go internals", c.name, f.Reason)
			}
		}
	}
	path := filepath.Join("testdata", "invalid.golden.txt")
	if *update {
		os.WriteFile(path, []byte(b.String()), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if diff := cmp.Diff(b.String(), string(want)); diff != "" {
		t.Errorf("validation texts changed (-got +want):\n%s", diff)
	}
}

// goish matches what only a Go programmer could read.
var goish = regexp.MustCompile(`schemas\.|\[\][a-z]|int64|Go (value|struct)|json: |: (not found|conflict|invalid input)$`)

// pathInRequest reports whether every step of path but the last exists
// in req (the last may be a field the client left out).
func pathInRequest(req any, path string) bool {
	steps := splitPath(path)
	cur := req
	for _, s := range steps[:len(steps)-1] {
		next, ok := step(cur, s)
		if !ok {
			return false
		}
		cur = next
	}
	last := steps[len(steps)-1]
	if _, isIndex := strconv.Atoi(last); isIndex == nil {
		_, ok := step(cur, last) // an index must exist
		return ok
	}
	_, isObject := cur.(map[string]any)
	return isObject
}

// splitPath splits "steps[0].file.sources[2]" into steps, 0, file, sources, 2.
func splitPath(path string) []string {
	return strings.FieldsFunc(path, func(r rune) bool { return r == '.' || r == '[' || r == ']' })
}

func step(cur any, s string) (any, bool) {
	switch v := cur.(type) {
	case map[string]any:
		next, ok := v[s]
		return next, ok
	case []any:
		i, err := strconv.Atoi(s)
		if err != nil || i < 0 || i >= len(v) {
			return nil, false
		}
		return v[i], true
	}
	return nil, false
}

// TestHostDecodeTexts: a badly shaped host is described in the client's
// terms, never with Go's.
func TestHostDecodeTexts(t *testing.T) {
	for in, want := range map[string]string{
		`7`:                     `a host is an IP address string or {"cloud_id": number, "ip": string}, not 7`,
		`[1]`:                   `a host is an IP address string or {"cloud_id": number, "ip": string}, not [1]`,
		`{"cloud": 1}`:          `a host has only "cloud_id" and "ip", not "cloud"`,
		`{"cloud_id": "2"}`:     `a host's cloud_id is a whole number, not "2"`,
		`{"ip": ["10.0.0.1"]}`:  `a host's ip is a string, not ["10.0.0.1"]`,
		`{"cloud_id": 1.5}`:     `a host's cloud_id is a whole number, not 1.5`,
		`{"ip": 1, "cloud": 1}`: `a host has only "cloud_id" and "ip", not "cloud"`,
	} {
		var h Host
		err := json.Unmarshal([]byte(in), &h)
		if err == nil || err.Error() != want {
			t.Errorf("%s: got %v, want %q", in, err, want)
		}
	}
}
