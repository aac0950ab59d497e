package bkjob

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/schemas"
)

func TestSplitShellWords(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     []string
	}{
		{"empty", "", nil},
		{"blanks", " \t\n ", nil},
		{"plain", "hello", []string{"hello"}},
		{"several", "  a b\tc\n", []string{"a", "b", "c"}},
		{"single quotes", `'b c' 'it''s'`, []string{"b c", "its"}},
		{"single quotes keep backslashes", `'a\"b'`, []string{`a\"b`}},
		{"double quotes", `"b c" "x\"y" "a\\b" "\$HOME" "a\nb"`, []string{"b c", `x"y`, `a\b`, "$HOME", `a\nb`}},
		{"empty quotes are a word", `'' ""`, []string{"", ""}},
		{"adjacent parts join", `a"b c"'d'e`, []string{"ab cde"}},
		{"escaped blank", `a\ b c`, []string{"a b", "c"}},
		{"line continuation", "a\\\nb", []string{"ab"}},
		{"no expansion", `$HOME * ~ $(id)`, []string{"$HOME", "*", "~", "$(id)"}},
		{"unicode", `"héllo wörld" 日本`, []string{"héllo wörld", "日本"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := splitShellWords(c.in)
			if err != nil || !slices.Equal(got, c.want) {
				t.Errorf("splitShellWords(%q) = %q, %v; want %q", c.in, got, err, c.want)
			}
		})
	}
	for _, bad := range []string{`'open`, `"open`, `a\`, `"a\"`} {
		if got, err := splitShellWords(bad); err == nil {
			t.Errorf("splitShellWords(%q) = %q, want an error", bad, got)
		}
	}
}

func TestBKParameterTypes(t *testing.T) {
	var r struct {
		bkCommon
		N bkInt  `json:"n"`
		B bkBool `json:"b"`
		M bkInt  `json:"m"`
	}
	if err := decodeParams([]byte(`{"bk_scope_type":"biz","bk_scope_id":1,"n":"42","b":"true","m":null}`), &r); err != nil {
		t.Fatal(err)
	}
	if r.ScopeID != "1" || r.N != (bkInt{42, true}) || !r.B.V || r.M.Set {
		t.Errorf("decoded %+v", r)
	}
	q, err := queryJSON(map[string][]string{"bk_biz_id": {"3"}, "n": {"7"}, "b": {"false"}})
	if err != nil {
		t.Fatal(err)
	}
	r.N, r.B = bkInt{}, bkBool{}
	if err := decodeParams(q, &r); err != nil || r.BizID.V != 3 || r.N.V != 7 || !r.B.Set || r.B.V {
		t.Errorf("from a query: %+v %v", r, err)
	}
	for in, field := range map[string]string{`{"n":"x"}`: "n", `{"n":1.5}`: "n", `{"b":"maybe"}`: "b", `{"nope":1}`: "nope", `{"bk_scope_id":{}}`: "bk_scope_id"} {
		err := decodeParams([]byte(in), &r)
		var fe schemas.FieldErrors
		if !asFieldErrors(err, &fe) || fe[0].Field != field {
			t.Errorf("%s: %v, want an error naming %s", in, err, field)
		}
	}
	if _, err := queryJSON(map[string][]string{"n": {"1", "2"}}); err == nil {
		t.Error("a repeated query parameter was accepted")
	}
}

func asFieldErrors(err error, fe *schemas.FieldErrors) bool {
	f, ok := err.(schemas.FieldErrors)
	*fe = f
	return ok && len(f) > 0
}

func TestBKScope(t *testing.T) {
	for _, c := range []struct {
		in   bkCommon
		want schemas.Scope
		bad  string
	}{
		{bkCommon{ScopeType: "biz", ScopeID: "1"}, schemas.Scope{Type: "biz", ID: "1"}, ""},
		{bkCommon{ScopeType: "biz_set", ScopeID: "9"}, schemas.Scope{Type: "biz_set", ID: "9"}, ""},
		{bkCommon{BizID: bkInt{2, true}}, schemas.Scope{Type: "biz", ID: "2"}, ""},
		{bkCommon{BizID: bkInt{8000001, true}}, schemas.Scope{Type: "biz_set", ID: "8000001"}, ""},
		{bkCommon{}, schemas.Scope{}, "bk_scope_type"},
		{bkCommon{ScopeType: "app", ScopeID: "1"}, schemas.Scope{Type: "app", ID: "1"}, "bk_scope_type"},
		{bkCommon{ScopeType: "biz"}, schemas.Scope{Type: "biz"}, "bk_scope_id"},
		{bkCommon{BizID: bkInt{0, true}}, schemas.Scope{Type: "biz", ID: "0"}, "bk_biz_id"},
	} {
		var v bkInvalid
		got := c.in.scope(&v)
		if got != c.want || (c.bad == "") != (len(v.fe) == 0) || c.bad != "" && v.fe[0].Field != c.bad {
			t.Errorf("scope of %+v: %+v, errors %v; want %+v, bad %q", c.in, got, v.fe, c.want, c.bad)
		}
	}
}

func TestBKStepInstanceIDs(t *testing.T) {
	spec := &schemas.JobSpec{Steps: make([]schemas.Step, 3)}
	for _, c := range []struct {
		job, stepID int64
		want        int
		ok          bool
	}{{7, 7000, 0, true}, {7, 7002, 2, true}, {7, 7003, 0, false}, {7, 8000, 0, false}, {7, 0, 0, false}, {7, -7000, 0, false}} {
		got, err := bkStepIndex(c.job, bkInt{c.stepID, true}, spec)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("step instance %d of job %d: %d %v", c.stepID, c.job, got, err)
		}
		if err != nil && bkCodeFor(err) != bkCodeStepNotExist {
			t.Errorf("code %d", bkCodeFor(err))
		}
	}
}

func TestBKHostCodes(t *testing.T) {
	code := func(n int) *int { return &n }
	for _, c := range []struct {
		name         string
		row          schemas.HostRow
		file         bool
		status, errc int
	}{
		{"pending", row(schemas.HostPending, nil, ""), false, 5, 0},
		{"waiting agent", row(schemas.HostWaitingAgent, nil, ""), false, 5, 0},
		{"dispatched", row(schemas.HostDispatched, nil, ""), false, 5, 0},
		{"running", row(schemas.HostRunning, nil, ""), false, 7, 0},
		{"success", row(schemas.HostSuccess, code(0), ""), false, 9, 0},
		{"non-zero exit", row(schemas.HostFailed, code(3), "exit code 3"), false, 104, 104},
		{"user missing", row(schemas.HostFailed, nil, `user "bob" does not exist on the host`), false, 311, 311},
		{"other script failure", row(schemas.HostFailed, nil, "interpreter python3 not found on the host"), false, 101, 101},
		{"script timeout", row(schemas.HostTimeout, code(137), "killed after the 1s timeout"), false, 102, 102},
		{"file timeout", row(schemas.HostTimeout, nil, "transfer not done"), true, 13, 13},
		{"source missing", row(schemas.HostFailed, nil, "file source failed: 1 of 1 source hosts did not upload their files"), true, 203, 203},
		{"transfer failed", row(schemas.HostFailed, nil, "download x: checksum mismatch"), true, 202, 202},
		{"stopped", row(schemas.HostStopped, nil, "killed: stop"), false, 403, 403},
		{"agent offline", row(schemas.HostAgentOffline, nil, ""), false, 1, 1},
		{"interrupted", row(schemas.HostInterrupted, nil, ""), false, 310, 310},
		{"skipped", row(schemas.HostSkipped, nil, "skipped by admin"), false, 5, 0},
	} {
		if s, e := bkHostCodes(c.row, c.file); s != c.status || e != c.errc {
			t.Errorf("%s: status %d error_code %d, want %d %d", c.name, s, e, c.status, c.errc)
		}
	}
}

func row(st schemas.HostStatus, exit *int, msg string) schemas.HostRow {
	return schemas.HostRow{HostResult: schemas.HostResult{Status: st, ExitCode: exit, Error: msg}}
}

func TestBKStatusCodes(t *testing.T) {
	st := &schemas.JobState{Status: schemas.JobWaitingUser, Steps: []schemas.StepState{{Status: schemas.JobRunning, Hold: schemas.HoldConfirm}, {Status: schemas.JobWaiting}}}
	if got := bkStepStatus(st, 0); got != 7 {
		t.Errorf("held step: %d", got)
	}
	st.Status, st.Steps[0].Hold = schemas.JobStopping, ""
	if a, b := bkStepStatus(st, 0), bkStepStatus(st, 1); a != 10 || b != 1 {
		t.Errorf("stopping: %d %d", a, b)
	}
	for code, want := range map[int]bool{1: false, 2: false, 3: true, 4: true, 5: true, 6: true, 7: false, 10: false, 11: true, 13: true} {
		if bkFinished(code) != want {
			t.Errorf("finished(%d) = %v", code, !want)
		}
	}
}

func TestBKSourcePaths(t *testing.T) {
	for in, want := range map[string]string{
		"/data/1.log":            "/data/1.log",
		"/data/*.log":            "/data/*.log",
		"/tmp/REGEX:[a-z]*.txt":  `REGEX:/tmp/(?:[a-z]*.txt)`,
		"/a.b/REGEX:x|y":         `REGEX:/a\.b/(?:x|y)`,
		"REGEX:/var/log/.*\\.gz": "REGEX:/var/log/.*\\.gz",
	} {
		if got, err := bkSourcePath(in); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"data/1.log", "/tmpREGEX:x", "/tmp/REGEX:(", "/tmp/REGEX:"} {
		if got, err := bkSourcePath(bad); err == nil {
			t.Errorf("%s accepted as %q", bad, got)
		}
	}
}

func TestBKFileLogRendering(t *testing.T) {
	l := &bkStepLogs{hosts: &bkHostIndex{byHost: map[schemas.Host]int64{{IP: "10.0.0.2"}: 102}}}
	got := l.bkFileLogOf(schemas.FileLog{Mode: 1, SourceHost: schemas.Host{IP: "10.0.0.2"}, SourcePath: "/data/1.log",
		DestHost: schemas.Host{IP: "10.0.0.1"}, DestPath: "/tmp/1.log", Status: 4, Size: 9, Speed: 2048, Progress: 100,
		Content: "[2021-06-28 11:32:16] Download success"})
	b, _ := json.Marshal(got)
	want := `{"mode":1,"src_ip":{"bk_host_id":102,"bk_cloud_id":0,"ip":"10.0.0.2"},"src_path":"/data/1.log",` +
		`"dest_ip":{"bk_cloud_id":0,"ip":"10.0.0.1"},"dest_path":"/tmp/1.log","status":4,` +
		`"log_content":"[2021-06-28 11:32:16] FileName: /tmp/1.log FileSize: 9.0 Bytes State: dest agent success download file Speed: 2 KB/s Progress: 100% StatusDesc: dest agent success download file Detail: Download success",` +
		`"size":"9.0 Bytes","speed":"2 KB/s","process":"100%"}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	up, _ := json.Marshal(l.bkFileLogOf(schemas.FileLog{Mode: 0, SourceHost: schemas.Host{IP: "10.0.0.3"}, SourcePath: "/d", Status: 5}))
	if strings.Contains(string(up), "dest_") {
		t.Errorf("an upload record has dest fields: %s", up)
	}
	for n, want := range map[int64]string{0: "0.0 Bytes", 1023: "1023.0 Bytes", 1536: "1.5 KB", 3 << 20: "3.0 MB"} {
		if got := bkSize(n); got != want {
			t.Errorf("bkSize(%d) = %q, want %q", n, got, want)
		}
	}
}

type fakePublisher struct{ n int }

func (f *fakePublisher) Publish(context.Context, string, []byte, string) (uint64, bool, error) {
	f.n++
	return uint64(f.n), false, nil
}

// testBKServer is a server without NATS or Redis: enough for routing,
// authentication and validation, which answer before anything is read.
func testBKServer(t *testing.T) (http.Handler, *fakePublisher) {
	pub := &fakePublisher{}
	reg, log := prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil))
	core := api.NewCore("secret", api.Deps{Publisher: pub, Registry: reg, Log: log})
	return api.New(log, reg, nil, New(core)).Handler(), pub
}

func bkCall(t *testing.T, h http.Handler, method, path, body string, hdr map[string]string) (int, bkEnvelope) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var env bkEnvelope
	if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil {
		t.Fatalf("%s %s: %d %q is not the envelope: %v", method, path, rec.Code, rec.Body, err)
	}
	return rec.Code, env
}

func TestBKRoutingAuthAndValidation(t *testing.T) {
	h, pub := testBKServer(t)
	auth := map[string]string{bkHeaderAuthorization: `{"bk_app_code":"ci","bk_app_secret":"secret","bk_username":"alice"}`}
	script := `{"bk_scope_type":"biz","bk_scope_id":"1","script_content":"ZWNobyAkMQ==","script_language":1,"account_alias":"root","target_server":{"ip_list":[{"bk_cloud_id":0,"ip":"10.0.0.1"}]}`
	for _, c := range []struct {
		name, method, path, body string
		hdr                      map[string]string
		status, code             int
		field                    string
	}{
		{"no credentials", "POST", "/api/v3/fast_execute_script", script + "}", nil, 401, bkCodeAuthFailed, ""},
		{"wrong secret", "POST", "/api/v3/fast_execute_script/", script + "}", map[string]string{bkHeaderAuthorization: `{"bk_app_code":"ci","bk_app_secret":"nope"}`}, 401, bkCodeAuthFailed, ""},
		{"header not JSON", "POST", "/api/v3/fast_execute_script", script + "}", map[string]string{bkHeaderAuthorization: `bk_app_secret=secret`}, 401, bkCodeAuthFailed, ""},
		{"body credentials off the ESB", "POST", "/api/v3/fast_execute_script", `{"bk_app_code":"ci","bk_app_secret":"secret",` + script[1:] + "}", nil, 401, bkCodeAuthFailed, ""},
		{"malformed JSON", "POST", "/api/c/compapi/v2/jobv3/fast_execute_script/", "{", auth, 200, bkCodeBadRequest, ""},
		{"unknown field", "POST", "/api/bk-job/prod/api/v3/fast_execute_script", script + `,"colour":1}`, auth, 200, bkCodeInvalidParam, "colour"},
		{"perl", "POST", "/api/v3/fast_execute_script", strings.Replace(script, `"script_language":1`, `"script_language":3`, 1) + "}", auth, 200, bkCodeNotSupported, "script_language"},
		{"timeout", "POST", "/api/v3/fast_execute_script", script + `,"timeout":86401}`, auth, 200, bkCodeInvalidParam, "timeout"},
		{"bad rolling", "POST", "/api/v3/system/fast_execute_script", script + `,"rolling_config":{"expression":"100% 1","mode":1}}`, auth, 200, bkCodeBadRollingExpr, "rolling_config.expression"},
		{"no hosts", "POST", "/api/v3/fast_execute_script", strings.Replace(script, `{"ip_list":[{"bk_cloud_id":0,"ip":"10.0.0.1"}]}`, `{}`, 1) + "}", auth, 200, bkCodeServerEmpty, "target_server"},
		{"unknown API", "POST", "/api/v3/fast_delete_everything", "{}", auth, 404, bkCodeUnsupportedAPI, ""},
		{"GET on a write API", "GET", "/api/v3/fast_execute_script", "", auth, 405, bkCodeBadRequest, ""},
		{"list without window", "GET", "/v2/jobv3/get_job_instance_list?bk_scope_type=biz&bk_scope_id=1", "", auth, 200, bkCodeInvalidParam, "create_time_start"},
		{"status without id", "GET", "/api/v3/get_job_instance_status?bk_biz_id=1", "", auth, 200, bkCodeInvalidParam, "job_instance_id"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, env := bkCall(t, h, c.method, c.path, c.body, c.hdr)
			if status != c.status || env.Result || env.Code != c.code || env.Data != nil || env.RequestID == "" || env.RequestID != env.JobRequestID {
				t.Errorf("got %d %+v, want %d code %d", status, env, c.status, c.code)
			}
			if c.field != "" && !strings.Contains(env.Message, c.field+":") {
				t.Errorf("message %q does not name %s", env.Message, c.field)
			}
		})
	}
	if pub.n != 0 {
		t.Errorf("%d commands published on bad input", pub.n)
	}
	// the ESB takes the credentials from the body, or from the query of a GET
	status, env := bkCall(t, h, "GET", "/api/c/compapi/v2/jobv3/get_job_instance_status/?bk_app_code=ci&bk_app_secret=secret&bk_scope_type=biz&bk_scope_id=1&job_instance_id=0", "", nil)
	if status != 200 || !strings.Contains(env.Message, "job_instance_id:") {
		t.Errorf("ESB query credentials: %d %+v", status, env)
	}
}

func TestBKRequestID(t *testing.T) {
	h, _ := testBKServer(t)
	_, env := bkCall(t, h, "POST", "/api/v3/get_job_instance_status", "{}", map[string]string{"X-Bkapi-Request-Id": "req-1"})
	if env.RequestID != "req-1" || env.JobRequestID != "req-1" {
		t.Errorf("request id: %+v", env)
	}
}

// lagReader is a job reader whose cached host rows are empty (the cache
// has not caught up with the commit) and which stores no results on their
// own: a small job's results are only in its state.
type lagReader struct {
	api.JobReader
	stored map[int]schemas.HostResult
}

func (lagReader) Hosts(context.Context, int64) ([]schemas.HostRow, error) { return nil, nil }

func (r lagReader) Results(_ context.Context, _ int64, _ int, _ string, idx []int) (map[int]schemas.HostResult, error) {
	out := map[int]schemas.HostResult{}
	for _, i := range idx {
		if res, ok := r.stored[i]; ok {
			out[i] = res
		}
	}
	return out, nil
}

func TestBKRowsWhileTheCacheLags(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	exit3, exit0 := 3, 0
	hosts := []schemas.Host{{IP: "10.0.0.1"}, {IP: "10.0.0.2"}, {IP: "10.0.0.3"}}
	spec := &schemas.JobSpec{Steps: []schemas.Step{{Type: schemas.StepScript, Targets: hosts}}}
	st := &schemas.JobState{CreatedAt: now, Steps: []schemas.StepState{{Hosts: schemas.NewHostTable(3)}}}
	tab := st.Steps[0].Hosts
	tab.Set(0, schemas.HostSuccess, st.Sec(now))
	tab.Set(1, schemas.HostFailed, st.Sec(now))
	tab.Set(2, schemas.HostFailed, st.Sec(now))
	// hosts 0 and 1 in the state (a small job); host 2 stored on its own
	st.PutResults([]schemas.HostResult{
		{Index: 0, Host: hosts[0], Status: schemas.HostSuccess, ExitCode: &exit0, Attempt: 1, StartedAt: now, EndedAt: now.Add(time.Second)},
		{Index: 1, Host: hosts[1], Status: schemas.HostFailed, ExitCode: &exit3, Attempt: 1, StartedAt: now, EndedAt: now.Add(2 * time.Second)},
	})
	stored := map[int]schemas.HostResult{2: {Index: 2, Host: hosts[2], Status: schemas.HostFailed, ExitCode: &exit3, Attempt: 1, StartedAt: now, EndedAt: now}}
	s := New(&api.Core{Jobs: lagReader{stored: stored}})
	rows, err := s.bkRows(context.Background(), spec, st)
	if err != nil {
		t.Fatal(err)
	}
	for j, want := range []struct{ status, code int }{{9, 0}, {104, 104}, {104, 104}} {
		r := rows[0][j]
		if status, code := bkHostCodes(r, false); status != want.status || code != want.code || !r.StartedAt.Equal(now) {
			t.Errorf("host %d: status %d code %d start %v; want %d %d %v (row %+v)", j, status, code, r.StartedAt, want.status, want.code, now, r)
		}
	}
}
