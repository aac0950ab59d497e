package bkjob

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/internal/fuzzcore"
	"github.com/fleetjob/fleetjob/schemas"
)

// The BlueKing surface under fuzzing: the real echo handler, its parameter
// decoding (params.go) and host reading (hosts.go) over fuzzcore's
// in-memory core (its Publisher only records: the property is the answer
// to the request, which comes before NATS would).

// bkAPIs are the surface's APIs; the get_ ones take GET as well.
var bkAPIs = []string{"get_job_instance_status", "get_job_instance_ip_log", "get_job_instance_list",
	"fast_execute_script", "fast_transfer_file", "batch_get_job_instance_ip_log", "operate_job_instance", "operate_step_instance"}

// bkDocExamples reads the request examples of docs/bkjob-api-reference.md
// by API: JSON objects as bodies, URLs as query strings.
func bkDocExamples(f *testing.F) (bodies, queries map[string][]string) {
	bodies, queries = map[string][]string{}, map[string][]string{}
	file, err := os.Open("../../docs/bkjob-api-reference.md")
	if err != nil {
		f.Fatal(err)
	}
	defer file.Close()
	section := regexp.MustCompile(`^## \d+\. (\w+)`)
	var name string
	var block *strings.Builder
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case block != nil && strings.HasPrefix(line, "```"):
			text := strings.TrimSpace(block.String())
			if _, q, ok := strings.Cut(text, "?"); ok && strings.HasPrefix(text, "/") {
				queries[name] = append(queries[name], q)
			} else if json.Valid([]byte(text)) && strings.HasPrefix(text, "{") {
				bodies[name] = append(bodies[name], text)
			}
			block = nil
		case block != nil:
			block.WriteString(line + "\n")
		case strings.HasPrefix(line, "```json"):
			block = &strings.Builder{}
		case section.MatchString(line):
			name = section.FindStringSubmatch(line)[1]
		}
	}
	return bodies, queries
}

// bkMoreSeeds are the README's requests and edge cases, by API.
var bkMoreSeeds = map[string][]string{
	"fast_execute_script": {
		`{"bk_scope_type":"biz","bk_scope_id":"1","script_content":"ZWNobyBoZWxsbyAkMQ==","script_param":"d29ybGQ=","script_language":1,"timeout":60,"account_alias":"root","target_server":{"ip_list":[{"bk_cloud_id":0,"ip":"10.0.0.1"}]}}`,
		`{"bk_scope_type":"biz","bk_scope_id":1,"script_content":"cm0gLXJmIC8=","script_language":"1","account_id":"3","target_server":{"host_id_list":["101"]},"rolling_config":{"expression":"1 +9223372036854775807","mode":4}}`,
		`{"bk_biz_id":9000000,"script_content":"eA","script_language":4,"is_param_sensitive":1,"script_param":"J2E=","account_alias":"root","target_server":{"ip_list":[{"ip":"10.0.0.1"}],"dynamic_group_list":[{}]}}`,
		`{"bk_scope_type":"biz_set","bk_scope_id":"x","script_version_id":1,"timeout":0,"target_server":{"host_id_list":[0,-1,99]}}`,
	},
	"fast_transfer_file": {
		`{"bk_app_code":"ops","bk_username":"admin","bk_biz_id":1,"file_target_path":"/tmp/fleetjob-demo","account_alias":"root","file_source_list":[{"file_list":["/etc/hostname"],"account":{"alias":"root"},"server":{"ip_list":[{"bk_cloud_id":0,"ip":"10.0.0.1"}]}}],"target_server":{"ip_list":[{"bk_cloud_id":0,"ip":"10.0.0.1"}]}}`,
		`{"bk_scope_type":"biz","bk_scope_id":"1","file_target_path":"/etc/","account_id":1,"transfer_mode":1,"file_source_list":[{"file_list":["/srv/REGEX:[a-z]*.txt","REGEX:(","/x/REGEX:"],"account":{"id":2},"server":{"host_id_list":[101]},"file_type":1}],"target_server":{"host_id_list":[101]}}`,
		`{"bk_scope_type":"biz","bk_scope_id":"1","file_target_path":"rel","file_target_name":"x","file_source_list":[{"file_type":3,"file_source_id":1}],"download_speed_limit":-1}`,
	},
	"get_job_instance_status":       {`{"bk_scope_type":"biz","bk_scope_id":"1","job_instance_id":1,"return_ip_result":"true"}`},
	"get_job_instance_ip_log":       {`{"bk_scope_type":"biz","bk_scope_id":"1","job_instance_id":1,"step_instance_id":1000,"bk_cloud_id":0,"ip":"10.0.0.1"}`, `{"bk_scope_type":"biz","bk_scope_id":"1","job_instance_id":1,"step_instance_id":1000,"bk_host_id":101}`},
	"batch_get_job_instance_ip_log": {`{"bk_scope_type":"biz","bk_scope_id":"1","job_instance_id":1,"step_instance_id":1000,"ip_list":[{"bk_cloud_id":0,"ip":"10.0.0.1"}],"host_id_list":[101]}`},
	"get_job_instance_list":         {`{"bk_scope_type":"biz","bk_scope_id":"1","create_time_start":1,"create_time_end":9999999999999,"start":0,"length":10,"job_instance_id":1}`},
	"operate_step_instance":         {`{"bk_scope_type":"biz","bk_scope_id":"1","job_instance_id":1,"step_instance_id":1000,"operation_code":2}`, `{"bk_scope_type":"biz","bk_scope_id":"1","job_instance_id":1,"step_instance_id":1000,"operation_code":13}`},
	"operate_job_instance":          {`{"bk_scope_type":"biz","bk_scope_id":"1","job_instance_id":1,"operation_code":1}`, `{"bk_scope_type":"biz","bk_scope_id":"1","job_instance_id":"1","operation_code":"1"}`},
}

// checkBKEnvelope asserts the BlueKing envelope: never a 5xx; an error is
// result false with a code other than INTERNAL_ERROR, a message and no
// data; request_id and job_request_id agree.
func checkBKEnvelope(t *testing.T, what string, status int, body []byte) bkEnvelope {
	t.Helper()
	var env bkEnvelope
	if status >= 500 {
		t.Fatalf("%s: %d %s", what, status, body)
	}
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("%s: %d %q is not the envelope: %v", what, status, body, err)
	}
	switch {
	case env.RequestID == "" || env.RequestID != env.JobRequestID:
		t.Errorf("%s: request ids %q %q", what, env.RequestID, env.JobRequestID)
	case env.Result && (env.Code != 0 || status != http.StatusOK):
		t.Errorf("%s: %d %s", what, status, body)
	case !env.Result && (env.Code == 0 || env.Code == bkCodeInternal || env.Message == "" || env.Data != nil):
		t.Errorf("%s: failure %d %s", what, status, body)
	}
	return env
}

// FuzzBKRequest sends arbitrary bodies and query strings to every API at
// every prefix with valid credentials: HTTP 200 in the envelope (405 for a
// GET of a POST-only API), never 5xx, and a command only from a write API
// that succeeded.
func FuzzBKRequest(f *testing.F) {
	bodies, queries := bkDocExamples(f)
	for i, a := range bkAPIs {
		for _, b := range append(bodies[a], bkMoreSeeds[a]...) {
			f.Add(uint8(i), uint8(i), false, "", []byte(b))
		}
		for _, q := range queries[a] {
			f.Add(uint8(i), uint8(i), true, q, []byte(nil))
		}
	}
	f.Add(uint8(0), uint8(2), true, "bk_scope_type=biz&bk_scope_id=1&job_instance_id=1&job_instance_id=2", []byte(nil))
	f.Add(uint8(2), uint8(0), true, "bk_scope_type=biz&bk_scope_id=1&create_time_start=x&length=%zz", []byte(nil))
	f.Add(uint8(3), uint8(1), false, "bk_scope_type=biz", []byte(" "))
	// the file job's logs (fuzzcore.FileJobID)
	f.Add(uint8(5), uint8(0), false, "", []byte(`{"bk_scope_type":"biz","bk_scope_id":"1","job_instance_id":2,"step_instance_id":2000,"ip_list":[{"bk_cloud_id":0,"ip":"10.0.0.1"}]}`))
	f.Add(uint8(1), uint8(0), true, "bk_scope_type=biz&bk_scope_id=1&job_instance_id=2&step_instance_id=2000&bk_cloud_id=0&ip=10.0.0.1", []byte(nil))
	f.Add(uint8(0), uint8(0), true, "bk_scope_type=biz&bk_scope_id=1&job_instance_id=2&return_ip_result=true", []byte(nil))
	core, rec := fuzzcore.Core(f)
	h := fuzzcore.Handler(core, New(core))
	auth := http.Header{bkHeaderAuthorization: {fmt.Sprintf(`{"bk_app_code":"fuzz","bk_app_secret":%q,"bk_username":"admin"}`, fuzzcore.Token)}}
	f.Fuzz(func(t *testing.T, apiIdx, prefix uint8, get bool, query string, body []byte) {
		a := bkAPIs[int(apiIdx)%len(bkAPIs)]
		target := strings.Replace(bkPrefixes[int(prefix)%len(bkPrefixes)], ":stage", "prod", 1) + a + "/"
		if query != "" {
			target += "?" + query
		}
		method := http.MethodPost
		if get {
			method = http.MethodGet
		}
		before := rec.Count()
		r := fuzzcore.Do(h, method, target, "application/json", body, auth)
		if r == nil {
			return // not a request a client can send
		}
		what := fmt.Sprintf("%s %s %q", method, target, body)
		env := checkBKEnvelope(t, what, r.Code, r.Body.Bytes())
		write := !strings.HasPrefix(a, "get_") && !strings.HasPrefix(a, "batch_get_")
		switch queued := rec.Count() - before; {
		case r.Code == http.StatusMethodNotAllowed && get && !strings.HasPrefix(a, "get_"): // POST-only APIs
		case r.Code != http.StatusOK:
			t.Errorf("%s: HTTP %d %s", what, r.Code, r.Body)
		case queued > 0 && (!env.Result || !write), queued > 1:
			t.Errorf("%s: %d commands for %s", what, queued, r.Body)
		}
	})
}

// FuzzBKAuth: without the app secret (in the header, or in the parameters
// on an ESB path) every request is a 401 AUTH_FAIL in the envelope, before
// any parameter is read; with it, never a 401.
func FuzzBKAuth(f *testing.F) {
	good := fmt.Sprintf(`{"bk_app_code":"fuzz","bk_app_secret":%q,"bk_username":"admin"}`, fuzzcore.Token)
	esb := fmt.Sprintf(`{"bk_app_code":"ops","bk_app_secret":%q,"bk_username":"admin","bk_biz_id":1,"job_instance_id":1}`, fuzzcore.Token)
	for _, c := range [][2]string{{good, `{}`}, {"", esb}, {"", `{"bk_app_secret":"wrong"}`}, {`{"bk_app_secret":null}`, esb},
		{"bk_app_secret=" + fuzzcore.Token, `{}`}, {`{"access_token":"` + fuzzcore.Token + `"}`, `x`}, {`[]`, ``}, {"", `{"bk_app_secret":1}`}} {
		f.Add(c[0], []byte(c[1]), true)
		f.Add(c[0], []byte(c[1]), false)
	}
	core, _ := fuzzcore.Core(f)
	h := fuzzcore.Handler(core, New(core))
	f.Fuzz(func(t *testing.T, header string, body []byte, onESB bool) {
		target := "/api/v3/get_job_instance_status/"
		if onESB {
			target = "/api/c/compapi/v2/jobv3/get_job_instance_status/"
		}
		hdr := http.Header{}
		if header != "" {
			hdr.Set(bkHeaderAuthorization, header)
			if hdr.Get(bkHeaderAuthorization) != header {
				return // not a header value a client can send
			}
		}
		r := fuzzcore.Do(h, http.MethodPost, target, "application/json", body, hdr)
		what := fmt.Sprintf("header %q body %q on %s", header, body, target)
		env := checkBKEnvelope(t, what, r.Code, r.Body.Bytes())
		carried := strings.Contains(header, fuzzcore.Token) || onESB && strings.Contains(string(body), fuzzcore.Token)
		if !carried && (r.Code != http.StatusUnauthorized || env.Code != bkCodeAuthFailed) {
			t.Errorf("%s: %d %s without the secret, want 401", what, r.Code, r.Body)
		}
	})
}

// FuzzBKParams decodes arbitrary parameters into every request type: a
// refusal is a 400 with a message (never internal), and the number,
// string and boolean parameter types read what they say.
func FuzzBKParams(f *testing.F) {
	bodies, _ := bkDocExamples(f)
	for _, bs := range bodies {
		for _, b := range bs {
			f.Add([]byte(b))
		}
	}
	for _, s := range []string{`{"job_instance_id":"12"}`, `{"job_instance_id":" 12 "}`, `{"job_instance_id":1e3}`, `{"job_instance_id":"9223372036854775808"}`,
		`{"bk_scope_id":-1}`, `{"bk_scope_id":true}`, `{"return_ip_result":"TRUE"}`, `{"return_ip_result":2}`, `{"ip_list":[{"bk_cloud_id":"x"}]}`,
		`{"bk_app_secret":1}`, `{"bkCommon":{}}`, `{"job_instance_id":"\u0031"}`, `{"timeout":null,"account_id":""}`} {
		f.Add([]byte(s))
	}
	targets := []func() any{
		func() any { return &bkScriptRequest{} }, func() any { return &bkFileRequest{} }, func() any { return &bkStatusRequest{} },
		func() any { return &bkIPLogRequest{} }, func() any { return &bkBatchLogRequest{} }, func() any { return &bkListRequest{} },
		func() any { return &bkOperateJobRequest{} }, func() any { return &bkOperateStepRequest{} },
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, newReq := range targets {
			req := newReq()
			err := decodeParams(b, req)
			if err != nil && (api.StatusOf(err) != http.StatusBadRequest || api.Message(err) == "" || bkCodeFor(err) == bkCodeInternal) {
				t.Fatalf("%q into %T: %v answers %d, code %d", b, req, err, api.StatusOf(err), bkCodeFor(err))
			}
		}
		var n bkInt
		if err := n.UnmarshalJSON(b); err == nil && n.Set {
			s := strings.TrimSpace(string(b))
			if uq, err := strconv.Unquote(s); err == nil {
				s = strings.TrimSpace(uq)
			}
			if v, err := strconv.ParseInt(s, 10, 64); err != nil || v != n.V {
				t.Errorf("bkInt %q read as %d", b, n.V)
			}
		}
		var flag bkBool
		if err := flag.UnmarshalJSON(b); err == nil && flag.Set {
			s := strings.ToLower(strings.Trim(strings.TrimSpace(string(b)), `"`))
			if want := s == "true" || s == "1"; flag.V != want {
				t.Errorf("bkBool %q read as %v", b, flag.V)
			}
		}
	})
}

// FuzzSplitShellWords: script_param split into words quotes back, each
// word in single quotes, into the same words.
func FuzzSplitShellWords(f *testing.F) {
	for _, s := range []string{`world`, `a 'b c' "d \" e" f\ g`, `"$HOME" '\'`, "a\\\nb", `''`, `"unterminated`, `'x`, `x\`, "\t a \r\n b "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		words, err := splitShellWords(s)
		if err != nil {
			return
		}
		if len(words) > schemas.MaxArgs {
			t.Fatalf("%d words", len(words))
		}
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
		back, err := splitShellWords(strings.Join(quoted, " "))
		if err != nil || !cmp.Equal(back, words) {
			t.Errorf("%q split into %q, quoted back into %q (%v)", s, words, back, err)
		}
	})
}

// FuzzBKSourcePath: a file_list entry is refused or becomes an absolute
// path, glob or a REGEX: that compiles.
func FuzzBKSourcePath(f *testing.F) {
	for _, s := range []string{"/srv/REGEX:[a-z]*.txt", "/etc/hostname", "REGEX:(", "/x/REGEX:", "/x/REGEX:(?i)a|b", "rel/REGEX:x", "/x/REGEX:a)(b", " /tmp/* "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		out, err := bkSourcePath(p)
		if err != nil || strings.HasPrefix(strings.TrimSpace(p), "REGEX:") {
			return // a REGEX: given as such is checked with the spec
		}
		if re, ok := strings.CutPrefix(out, "REGEX:"); ok {
			if _, err := regexp.Compile(re); err != nil {
				t.Errorf("%q became %q, which does not compile: %v", p, out, err)
			}
		} else if !strings.HasPrefix(out, "/") {
			t.Errorf("%q became %q", p, out)
		}
	})
}

// FuzzBKHostIDRecord: the host ids a job records (JobSpec.Extra) read back
// as the same hosts, IPv6 ones included.
func FuzzBKHostIDRecord(f *testing.F) {
	for _, ip := range []string{"10.0.0.1", "fe80::1", "::ffff:10.0.0.1", "2001:db8::1", "fe80::1%eth0"} {
		f.Add(int64(0), ip, int64(7))
		f.Add(int64(3), ip, int64(1))
	}
	f.Fuzz(func(t *testing.T, cloud int64, ip string, id int64) {
		h := schemas.Host{CloudID: cloud, IP: ip}
		if h.Validate() != nil || id < 1 {
			return
		}
		x := &bkHostIndex{byID: map[int64]schemas.Host{id: h}, byHost: map[schemas.Host]int64{h: id}}
		spec := &schemas.JobSpec{Extra: map[string]string{bkExtraHostIDs: x.record([]schemas.Host{h})}}
		back := (&Surface{core: &api.Core{}}).bkHosts(spec)
		if got, ok := back.byID[id]; !ok || got != h || back.byHost[h] != id {
			t.Errorf("host %+v with id %d recorded as %s reads back as %+v", h, id, spec.Extra[bkExtraHostIDs], back.byID)
		}
	})
}
