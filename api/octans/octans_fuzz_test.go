package octans

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"mvdan.cc/sh/v3/syntax"

	"github.com/fleetjob/fleetjob/internal/fuzzcore"
)

// The octans surface under fuzzing: the real echo handler and decoders
// over fuzzcore's in-memory core (its Publisher only records: the property
// is the answer to the request, which comes before NATS would).

// octansSeeds are the seed document's requests (test/contract/testdata/
// seed001_octans.json), the README's and edge cases, by route.
var octansSeeds = map[string][]string{
	"/api/run": {
		`{"nodes":["127.0.0.61"],"user":"root","name":"127.0.0.61_install_nginx_1501169594802406967","content":"echo installing $PKG","params":"{\"PKG\": \"nginx\"}","fork_num":"5"}`,
		`{"nodes":["127.0.0.1"],"user":"root","name":"127.0.0.1_install_nginx_1501169594802406967","tasks":[{"name":"install","shell":"echo installing $PKG"},{"command":"true"}],"params":{"PKG":"nginx"},"fork_num":5}`,
		`{"nodes":["127.0.0.1"],"name":"long-1","tasks":"sleep 600"}`,
		`{"nodes":["127.0.0.1"],"name":"t","tasks":{"shell":"ls","args":{"chdir":"/tmp"},"environment":{"A":"b"},"ignore_errors":true}}`,
		`{"nodes":["127.0.0.1"],"name":"t","tasks":[{"shell":"x","raw":"y"}]}`, `{"nodes":["1.1.1.1"],"name":"t","tasks":"rm -rf /"}`,
		`{"nodes":["x"],"name":"","tasks":[],"params":"[1]","fork_num":-1}`, `{"nodes":[],"name":"t","content":"  "}`,
		`{"nodes":["1.1.1.1"],"name":"t","tasks":[{"shell":"EOF\n)\n\"","environment":{"1":"x"}}]}`, `{`, ``, `{"x":1}`,
	},
	"/api/parallel_run": {
		`{"nodes":["192.201.11.31"],"user":"root","name":"192.201.11.31_install_nginx_1501169594802406967","content":"sleep 60","params":"{}","fork_num":"1"}`,
		`{"nodes":["127.0.0.1"],"name":"p1","tasks":"uptime"}`,
	},
	"/api/stop":   {`{"id":1,"name":"task1"}`, `{"name":"long-1"}`, `{"id":-1}`, `{"id":"1"}`, `{}`, `{"id":99}`},
	"/api/check":  {`{"id":1,"name":"task1"}`, `{"name":"127.0.0.1_install_nginx_1501169594802406967"}`, `{"id":1}`, `{"name":" "}`},
	"/api/getlog": {`{"host":"127.0.0.1","source":"hubble"}`, `{"host":"10.0.0.1","source":"orion"}`, `{"host":"10.0.0.1"}`, `{"host":"::1x"}`},
}

// FuzzOctansRequest posts arbitrary bodies to every octans route: always
// HTTP 200 in the {code, content, message} envelope, code 0 or -1, a
// failure with a message that is not "internal error", and a command only
// for a run that succeeded.
func FuzzOctansRequest(f *testing.F) {
	var routes []string
	for r := range octansSeeds {
		routes = append(routes, r)
	}
	for i, r := range routes {
		for _, s := range octansSeeds[r] {
			f.Add(uint8(i), []byte(s))
		}
	}
	core, rec := fuzzcore.Core(f)
	h := fuzzcore.Handler(core, New(core))
	hdr := http.Header{"Authorization": {"Bearer " + fuzzcore.Token}}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		path := routes[int(route)%len(routes)]
		// a name may be claimed only once: vary it, or most runs are duplicates
		body = []byte(strings.Replace(string(body), `"name":"`, fmt.Sprintf(`"name":"%d-`, rec.Count()), 1))
		before := rec.Count()
		r := fuzzcore.Do(h, "POST", path, "application/json", body, hdr)
		what := fmt.Sprintf("POST %s %q", path, body)
		if r.Code != http.StatusOK {
			t.Fatalf("%s: HTTP %d %s, want 200", what, r.Code, r.Body)
		}
		var env struct {
			Code    *int             `json:"code"`
			Content *json.RawMessage `json:"content"`
			Message string           `json:"message"`
		}
		if err := json.Unmarshal(r.Body.Bytes(), &env); err != nil || env.Code == nil {
			t.Fatalf("%s: %s is not the envelope (%v)", what, r.Body, err)
		}
		queued := rec.Count() - before
		switch *env.Code {
		case 0:
			if env.Content == nil {
				t.Errorf("%s: success without content: %s", what, r.Body)
			}
			run := path == "/api/run" || path == "/api/parallel_run"
			if run && queued != 1 || !run && path != "/api/stop" && queued != 0 {
				t.Errorf("%s: %d commands for a success", what, queued)
			}
		case -1:
			if env.Message == "" || env.Message == "internal error" || queued != 0 {
				t.Errorf("%s: failure %s after %d commands", what, r.Body, queued)
			}
		default:
			t.Errorf("%s: code %d", what, *env.Code)
		}
	})
}

// FuzzOctansScript turns arbitrary "tasks" into a script: when it does,
// the script parses as bash and carries every task body verbatim, between
// heredoc delimiters the body does not contain.
func FuzzOctansScript(f *testing.F) {
	for _, s := range []string{`"echo hi"`, `[{"name":"install","shell":"echo installing $PKG"},{"command":"true"}]`,
		`{"shell":"ls","args":{"chdir":"/tmp'x"},"environment":{"A":"b'c"},"ignore_errors":true}`,
		`[{"shell":"EOF\n)\n\"'"},{"script":"/opt/x.sh --a","name":"it's"}]`, `[{"raw":"__FLEETJOB_TASK_0_00000000__"}]`,
		`[{"shell":")"}]`, `[{"shell":"$("}]`, `[{"shell":"x\\"}]`, `[]`, `null`, `""`, `[{"shell":"a","command":"b"}]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		script, err := octansScript(raw)
		if err != nil {
			if err.Error() == "" {
				t.Error("an error without a message")
			}
			return
		}
		if strings.HasPrefix(strings.TrimSpace(string(raw)), `"`) {
			return // a plain script runs as given
		}
		if _, err := syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(strings.NewReader(script), ""); err != nil {
			t.Errorf("tasks %q make a script bash cannot parse: %v\n%s", raw, err, script)
		}
		var tasks []octansTask
		if json.Unmarshal(raw, &tasks) != nil {
			var one octansTask
			if json.Unmarshal(raw, &one) != nil {
				return
			}
			tasks = []octansTask{one}
		}
		for _, task := range tasks {
			if body, err := task.body(); err == nil && !strings.Contains(script, "\n"+body+"\n") {
				t.Errorf("task body %q is not in the script:\n%s", body, script)
			}
		}
	})
}

// FuzzOctansParams: params that are accepted become environment variables
// with valid names; fork_num is never negative.
func FuzzOctansParams(f *testing.F) {
	for _, s := range []string{`{"PKG":"nginx"}`, `"{\"PKG\": \"nginx\"}"`, `"{}"`, `{"A":1,"B":null,"C":[1]}`, `{"1A":"x"}`, `"  "`, `[1]`, `5`, `"5"`, `" 7 "`, `-1`, `1.5`, `"x"`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if env, err := octansParams(raw); err == nil {
			for k := range env {
				if !validEnvName(k) {
					t.Errorf("params %q: variable %q", raw, k)
				}
			}
		}
		if n, err := octansForkNum(raw); err == nil && n < 0 {
			t.Errorf("fork_num %q: %d", raw, n)
		}
	})
}
