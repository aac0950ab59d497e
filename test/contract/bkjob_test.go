package contract

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/internal/roles"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
)

// The BlueKing Job surface against a real system: each API is fed the
// documented JSON example from docs/bkjob-api-reference.md (hosts, ids and
// paths adapted) and its answer is compared with the documented shape.

// bkAuth is the gateway's credential header: the admin token as the app
// secret; bk_username becomes the job's owner.
func bkAuth(s *testenv.System) map[string]string {
	return map[string]string{"X-Bkapi-Authorization": fmt.Sprintf(`{"bk_app_code": "ci", "bk_app_secret": %q, "bk_username": "alice"}`, s.Token),
		"Authorization": ""}
}

// bk calls a BlueKing API and returns the HTTP status and the envelope.
func bk(t *testing.T, s *testenv.System, method, path string, body any) (int, map[string]any) {
	t.Helper()
	return bkWith(t, s, method, path, body, bkAuth(s))
}

func bkWith(t *testing.T, s *testenv.System, method, path string, body any, hdr map[string]string) (int, map[string]any) {
	t.Helper()
	var env map[string]any
	code := s.JSON(t, method, path, body, hdr, &env)
	wantShape(t, method+" "+path, env, map[string]string{"result": "bool", "code": "number", "message": "string",
		"data": "any", "request_id": "string", "job_request_id": "string"})
	if env["request_id"] == "" || env["request_id"] != env["job_request_id"] {
		t.Errorf("%s %s: request ids %v %v", method, path, env["request_id"], env["job_request_id"])
	}
	return code, env
}

// bkData calls an API that must succeed and returns its data.
func bkData(t *testing.T, s *testenv.System, method, path string, body any) map[string]any {
	t.Helper()
	code, env := bk(t, s, method, path, body)
	if code != 200 || env["result"] != true || num(env["code"]) != 0 {
		t.Fatalf("%s %s: %d %v", method, path, code, env)
	}
	data, ok := env["data"].(map[string]any)
	if !ok {
		t.Fatalf("%s %s: data %T", method, path, env["data"])
	}
	return data
}

// bkFail calls an API that must fail with an HTTP status and a BlueKing
// code, with a message naming field (when not empty).
func bkFail(t *testing.T, s *testenv.System, method, path string, body any, status, code int, field string) {
	t.Helper()
	got, env := bk(t, s, method, path, body)
	if got != status || env["result"] != false || num(env["code"]) != int64(code) || env["data"] != nil {
		t.Errorf("%s %s: %d %v, want %d with code %d", method, path, got, env, status, code)
	}
	if msg, _ := env["message"].(string); field != "" && !strings.Contains(msg, field+":") {
		t.Errorf("%s %s: message %q does not name %s", method, path, msg, field)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// startBKAgent runs an agent that carries a BlueKing host id.
func startBKAgent(t *testing.T, s *testenv.System, id, ip string, hostID int64) {
	t.Helper()
	p := s.P
	p.Reg = prometheus.NewRegistry()
	cfg := agent.Config{ID: id, IP: ip, HostID: hostID, Version: "test", DataDir: filepath.Join(s.Dir, "agent-"+id),
		Slots: 64, Heartbeat: time.Second, ShutdownGrace: 2 * time.Second, Topology: s.P.Top}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := roles.RunAgent(ctx, p, cfg, nil); err != nil && ctx.Err() == nil {
			t.Errorf("agent %s: %v", id, err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	s.WaitAgent(t, id)
}

// storedSpec reads a job's spec as the workers stored it.
func storedSpec(t *testing.T, s *testenv.System, id int64) schemas.JobSpec {
	t.Helper()
	kv, err := s.JS.KeyValue(t.Context(), schemas.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	var spec schemas.JobSpec
	testenv.Eventually(t, 10*time.Second, func() bool {
		e, err := kv.Get(t.Context(), schemas.KeyJobSpec(id))
		return err == nil && json.Unmarshal(e.Value(), &spec) == nil
	}, "spec of job %d", id)
	return spec
}

// bkSubmitted checks fast_execute_script / fast_transfer_file's answer and
// returns the job and step instance ids.
func bkSubmitted(t *testing.T, s *testenv.System, api string, body any, namePrefix string) (int64, int64) {
	t.Helper()
	code, env := bk(t, s, "POST", "/api/v3/"+api, body)
	if code != 200 || env["message"] != "success" {
		t.Fatalf("%s: %d %v", api, code, env)
	}
	d := wantShape(t, api, env["data"], map[string]string{"job_instance_id": "number", "job_instance_name": "string", "step_instance_id": "number"})
	id := num(d["job_instance_id"])
	if id <= 0 || num(d["step_instance_id"]) != id*1000 || !strings.HasPrefix(d["job_instance_name"].(string), namePrefix) {
		t.Errorf("%s: data %v", api, d)
	}
	return id, num(d["step_instance_id"])
}

// bkSeed003Extra are the keys fleetjob's batch_get_job_instance_ip_log
// answers beyond seed 003's examples, each documented elsewhere: the
// gateway's request ids (every answer), job_instance_id beside
// task_instance_id and bk_host_id beside each IP (docs/bkjob-api-reference.md
// §batch_get_job_instance_ip_log, the current generation of the API), and
// a file log's size, speed and process (the same reference's file_log).
var bkSeed003Extra = map[string]bool{
	"request_id": true, "job_request_id": true, "data.job_instance_id": true,
	"data.script_task_logs[].bk_host_id": true, "data.file_task_logs[].bk_host_id": true,
	"data.file_task_logs[].file_logs[].src_ip.bk_host_id": true, "data.file_task_logs[].file_logs[].dest_ip.bk_host_id": true,
	"data.file_task_logs[].file_logs[].size": true, "data.file_task_logs[].file_logs[].speed": true,
	"data.file_task_logs[].file_logs[].process": true,
}

var (
	bkJobShape  = map[string]string{"job_instance_id": "number", "bk_scope_type": "string", "bk_scope_id": "string", "name": "string", "create_time": "number", "status": "number", "start_time": "time", "end_time": "time", "total_time": "time"}
	bkStepShape = map[string]string{"status": "number", "total_time": "time", "name": "string", "step_instance_id": "number", "execute_count": "number",
		"create_time": "number", "end_time": "time", "type": "number", "start_time": "time"}
	bkHostShape = map[string]string{"bk_host_id": "number", "ip": "string", "bk_cloud_id": "number", "status": "number", "tag": "string",
		"exit_code": "number", "error_code": "number", "start_time": "time", "end_time": "time", "total_time": "time"}
)

func without(m map[string]string, k string) map[string]string {
	out := map[string]string{}
	for kk, v := range m {
		if kk != k {
			out[kk] = v
		}
	}
	return out
}

func with(m map[string]string, k, v string) map[string]string {
	out := without(m, k)
	out[k] = v
	return out
}

// bkStatusOf reads get_job_instance_status (GET, with host results) and
// checks its shape.
func bkStatusOf(t *testing.T, s *testenv.System, id int64) (job map[string]any, steps []map[string]any) {
	t.Helper()
	d := bkData(t, s, "GET", fmt.Sprintf("/api/v3/get_job_instance_status?bk_scope_type=biz&bk_scope_id=1&job_instance_id=%d&return_ip_result=true", id), nil)
	wantShape(t, "status", d, map[string]string{"finished": "bool", "job_instance": "object", "step_instance_list": "array"})
	job = wantShape(t, "job_instance", d["job_instance"], bkJobShape)
	job["finished"] = d["finished"]
	for _, st := range list(t, d["step_instance_list"]) {
		shape := with(bkStepShape, "step_ip_result_list", "array")
		if _, ok := st.(map[string]any)["step_ip_result_list"]; !ok {
			shape = bkStepShape
		}
		steps = append(steps, wantShape(t, "step_instance", st, shape))
	}
	return job, steps
}

// bkHostsOf returns a step's host results by IP, shape-checked.
func bkHostsOf(t *testing.T, step map[string]any, withIDs bool) map[string]map[string]any {
	t.Helper()
	shape := bkHostShape
	if !withIDs {
		shape = without(bkHostShape, "bk_host_id")
	}
	out := map[string]map[string]any{}
	for _, h := range list(t, step["step_ip_result_list"]) {
		m := wantShape(t, "step_ip_result", h, shape)
		out[m["ip"].(string)] = m
	}
	return out
}

func bkWaitJob(t *testing.T, s *testenv.System, id int64, what string, cond func(job map[string]any, steps []map[string]any) bool) (map[string]any, []map[string]any) {
	t.Helper()
	var job map[string]any
	var steps []map[string]any
	testenv.Eventually(t, 20*time.Second, func() bool {
		job, steps = bkStatusOf(t, s, id)
		return cond(job, steps)
	}, "job %d: %s", id, what)
	return job, steps
}

func bkFinished(t *testing.T, s *testenv.System, id int64) (map[string]any, []map[string]any) {
	t.Helper()
	return bkWaitJob(t, s, id, "finished", func(job map[string]any, _ []map[string]any) bool { return job["finished"] == true })
}

func TestBKScriptStatusLogsAndList(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1})
	startBKAgent(t, s, "bk1", "127.0.0.81", 101)
	startBKAgent(t, s, "bk2", "127.0.0.82", 102)
	s.StartAgent(t, "bk3", "127.0.0.83") // no host id: answers keep the seed's shape
	before := time.Now().Add(-time.Minute).UnixMilli()

	// fast_execute_script, the gateway example: the script comes in
	// script_content (fleetjob has no script library, so the version id
	// is ignored), "echo $1" with "hello"; account_id only runs as the
	// agent's account.
	id, stepID := bkSubmitted(t, s, "fast_execute_script", `{
    "bk_scope_type": "biz",
    "bk_scope_id": "1",
    "script_version_id": 1,
    "script_content": "ZWNobyAkMQ==",
    "script_param": "aGVsbG8=",
    "timeout": 1000,
    "account_id": 1000,
    "is_param_sensitive": 0,
    "script_language": 1,
    "target_server": {
        "host_id_list": [
            101,
            102
        ]
    }
}`, "API Quick execution script")
	spec := storedSpec(t, s, id)
	sc := spec.Steps[0].Script
	if *spec.Scope != (schemas.Scope{Type: "biz", ID: "1"}) || spec.Owner != "alice" || spec.Source != "ci" || spec.Surface != "bkjob" ||
		sc.Interpreter != "bash" || !slices.Equal(sc.Args, []string{"hello"}) || sc.Sensitive || sc.User != "" || spec.Steps[0].Timeout != 1000 ||
		spec.Extra["bk_task_type"] != "1" || spec.Extra["bk_account_id"] != "1000" || len(spec.Steps[0].Targets) != 2 {
		t.Errorf("stored spec: %+v, step %+v, script %+v", spec, spec.Steps[0], sc)
	}
	// the legacy ESB form: bk_biz_id, ip_list; python with quoted params
	id2, stepID2 := bkSubmitted(t, s, "fast_execute_script", map[string]any{
		"bk_biz_id": 1, "task_name": "py-args", "account_alias": "root", "script_language": 4,
		"script_content": b64(`import sys; print("|".join(sys.argv[1:]))`), "script_param": b64(`alpha "beta gamma" 'delta '\''epsilon'`),
		"target_server": map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.83"}}},
	}, "py-args")
	// sensitive parameters are masked in the output
	id3, stepID3 := bkSubmitted(t, s, "fast_execute_script", map[string]any{
		"bk_scope_type": "biz", "bk_scope_id": "1", "task_name": "masked", "account_alias": "root", "script_language": 1,
		"script_content": b64(`echo "$1 $2"`), "script_param": b64(`s3cret "pass word"`), "is_param_sensitive": 1,
		"target_server": map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.83"}}},
	}, "masked")
	if spec := storedSpec(t, s, id3); !spec.Steps[0].Script.Sensitive || spec.Steps[0].Script.User != "root" {
		t.Errorf("sensitive job: %+v", spec.Steps[0].Script)
	}

	job, steps := bkFinished(t, s, id)
	if num(job["job_instance_id"]) != id || job["bk_scope_type"] != "biz" || job["bk_scope_id"] != "1" || num(job["status"]) != 3 ||
		job["name"] != spec.Name || num(job["total_time"]) != num(job["end_time"])-num(job["start_time"]) {
		t.Errorf("job_instance: %v", job)
	}
	if len(steps) != 1 || num(steps[0]["step_instance_id"]) != stepID || num(steps[0]["type"]) != 1 || num(steps[0]["status"]) != 3 ||
		num(steps[0]["execute_count"]) != 0 || steps[0]["name"] != spec.Name {
		t.Fatalf("steps: %v", steps)
	}
	hosts := bkHostsOf(t, steps[0], true)
	for ip, hid := range map[string]int64{"127.0.0.81": 101, "127.0.0.82": 102} {
		h := hosts[ip]
		if num(h["bk_host_id"]) != hid || num(h["bk_cloud_id"]) != 0 || num(h["status"]) != 9 || num(h["error_code"]) != 0 ||
			num(h["exit_code"]) != 0 || h["tag"] != "" || h["end_time"] == nil {
			t.Errorf("host %s: %v", ip, h)
		}
	}
	// the ESB form: POST with the credentials in the body; no host results
	code, env := bkWith(t, s, "POST", "/api/c/compapi/v2/jobv3/get_job_instance_status/", map[string]any{
		"bk_app_code": "esb_test", "bk_app_secret": s.Token, "bk_token": "xxx", "bk_scope_type": "biz", "bk_scope_id": "1", "job_instance_id": id,
	}, map[string]string{"Authorization": ""})
	if d, _ := env["data"].(map[string]any); code != 200 || d == nil || d["finished"] != true {
		t.Fatalf("ESB status: %d %v", code, env)
	} else if st := list(t, d["step_instance_list"]); len(st) != 1 {
		t.Errorf("ESB steps: %v", st)
	} else {
		wantShape(t, "step without host results", st[0], bkStepShape)
	}

	// get_job_instance_ip_log: the gateway's GET example, and the ESB body
	// example by bk_host_id
	d := bkData(t, s, "GET", fmt.Sprintf("/api/v3/get_job_instance_ip_log?bk_scope_type=biz&bk_scope_id=1&job_instance_id=%d&step_instance_id=%d&bk_cloud_id=0&ip=127.0.0.81", id, stepID), nil)
	wantShape(t, "ip log", d, map[string]string{"log_type": "number", "bk_host_id": "number", "ip": "string", "bk_cloud_id": "number", "log_content": "string"})
	if num(d["log_type"]) != 1 || num(d["bk_host_id"]) != 101 || d["ip"] != "127.0.0.81" || d["log_content"] != "hello\n" {
		t.Errorf("ip log: %v", d)
	}
	d = bkData(t, s, "POST", "/api/c/compapi/v2/jobv3/get_job_instance_ip_log/", map[string]any{
		"bk_app_code": "esb_test", "bk_app_secret": s.Token, "bk_token": "xxx", "bk_scope_type": "biz", "bk_scope_id": "1",
		"job_instance_id": id, "step_instance_id": stepID, "bk_host_id": 102})
	if d["ip"] != "127.0.0.82" || d["log_content"] != "hello\n" {
		t.Errorf("ip log by host id: %v", d)
	}

	// batch_get_job_instance_ip_log: the seed's request, byte for byte but
	// the ids and IPs (its trailing tab included)
	seed := fmt.Sprintf(`{
    "bk_scope_type": "biz",
    "bk_scope_id": "1",
    "job_instance_id": %d,
    "step_instance_id": %d,
    "ip_list": [
        {
            "bk_cloud_id": 0,
            "ip": "127.0.0.81"
        },
        {
            "bk_cloud_id": 0,
            "ip": "127.0.0.82"
        }
    ]
}	`, id, stepID)
	d = bkData(t, s, "POST", "/api/bk-job/prod/api/v3/batch_get_job_instance_ip_log", seed)
	_, env = bk(t, s, "POST", "/api/bk-job/prod/api/v3/batch_get_job_instance_ip_log", seed)
	sameShape(t, "seed 003 script example", env, examples(t, "seed003_bkjob.json")["script.response"], bkSeed003Extra)
	wantShape(t, "batch", d, map[string]string{"log_type": "number", "task_instance_id": "number", "job_instance_id": "number", "step_instance_id": "number", "script_task_logs": "array"})
	if num(d["log_type"]) != 1 || num(d["task_instance_id"]) != id || num(d["job_instance_id"]) != id || num(d["step_instance_id"]) != stepID {
		t.Errorf("batch: %v", d)
	}
	logs := list(t, d["script_task_logs"])
	if len(logs) != 2 {
		t.Fatalf("script_task_logs: %v", logs)
	}
	for i, ip := range []string{"127.0.0.81", "127.0.0.82"} {
		l := wantShape(t, "script_task_log", logs[i], map[string]string{"bk_host_id": "number", "ip": "string", "bk_cloud_id": "number", "log_content": "string"})
		if l["ip"] != ip || l["log_content"] != "hello\n" || num(l["bk_host_id"]) != 101+int64(i) {
			t.Errorf("script_task_log %d: %v", i, l)
		}
	}
	// the current gateway form by host ids
	d = bkData(t, s, "POST", "/api/v3/batch_get_job_instance_ip_log/", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1",
		"job_instance_id": id, "step_instance_id": stepID, "host_id_list": []int{102, 101}})
	if logs := list(t, d["script_task_logs"]); len(logs) != 2 || logs[0].(map[string]any)["ip"] != "127.0.0.82" {
		t.Errorf("batch by host id: %v", logs)
	}

	// the python job (legacy bk_biz_id scope) split its quoted parameters;
	// a host without an id answers exactly the seed's shape
	bkFinished(t, s, id2)
	d = bkData(t, s, "POST", "/api/v3/batch_get_job_instance_ip_log", map[string]any{"bk_biz_id": 1, "job_instance_id": id2, "step_instance_id": stepID2,
		"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.83"}, map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.99"}}})
	if logs := list(t, d["script_task_logs"]); len(logs) != 1 {
		t.Errorf("python logs: %v", logs)
	} else if l := wantShape(t, "seed script_task_log", logs[0], map[string]string{"ip": "string", "bk_cloud_id": "number", "log_content": "string"}); l["log_content"] != "alpha|beta gamma|delta 'epsilon\n" {
		t.Errorf("python output: %q", l["log_content"])
	}
	// a request by bk_biz_id alone gets it echoed, as the older ESB did
	d = bkData(t, s, "GET", fmt.Sprintf("/api/c/compapi/v2/jobv3/get_job_instance_status/?bk_biz_id=1&job_instance_id=%d", id2), nil)
	if legacy := wantShape(t, "legacy job_instance", d["job_instance"], with(bkJobShape, "bk_biz_id", "number")); num(legacy["bk_biz_id"]) != 1 || legacy["name"] != "py-args" {
		t.Errorf("legacy status: %v", legacy)
	}
	bkFinished(t, s, id3)
	d = bkData(t, s, "GET", fmt.Sprintf("/api/v3/get_job_instance_ip_log/?bk_biz_id=1&job_instance_id=%d&step_instance_id=%d&bk_cloud_id=0&ip=127.0.0.83", id3, stepID3), nil)
	if d["log_content"] != "****** ******\n" {
		t.Errorf("sensitive output: %q", d["log_content"])
	}

	// scope: another business, a business set, or a job of another surface
	// is not found
	bkFail(t, s, "GET", fmt.Sprintf("/api/v3/get_job_instance_status?bk_scope_type=biz&bk_scope_id=2&job_instance_id=%d", id), nil, 200, 1244006, "")
	bkFail(t, s, "GET", fmt.Sprintf("/api/v3/get_job_instance_status?bk_scope_type=biz_set&bk_scope_id=1&job_instance_id=%d", id), nil, 200, 1244006, "")
	native := s.Submit(t, script("true", "127.0.0.83"), nil)
	bkFail(t, s, "GET", fmt.Sprintf("/api/v3/get_job_instance_status?bk_scope_type=biz&bk_scope_id=1&job_instance_id=%d", native), nil, 200, 1244006, "")
	bkFail(t, s, "GET", fmt.Sprintf("/api/v3/get_job_instance_ip_log?bk_scope_type=biz&bk_scope_id=1&job_instance_id=%d&step_instance_id=%d&bk_cloud_id=0&ip=127.0.0.83", id, stepID), nil, 200, 1244002, "")
	bkFail(t, s, "GET", fmt.Sprintf("/api/v3/get_job_instance_ip_log?bk_scope_type=biz&bk_scope_id=1&job_instance_id=%d&step_instance_id=%d&bk_cloud_id=0&ip=127.0.0.81", id, stepID2), nil, 200, 1244007, "")

	// get_job_instance_list: the gateway's GET example with this test's
	// values (its 365-day window is over the 30-day limit)
	after := time.Now().Add(time.Minute).UnixMilli()
	d = bkData(t, s, "GET", fmt.Sprintf("/api/v3/get_job_instance_list?bk_scope_type=biz&bk_scope_id=1&type=1&launch_mode=2&status=3&operator=alice&name=API&create_time_start=%d&create_time_end=%d&start=0&length=20", before, after), nil)
	wantShape(t, "list", d, map[string]string{"data": "array", "start": "number", "length": "number", "total": "number"})
	items := list(t, d["data"])
	if num(d["total"]) != 1 || len(items) != 1 || num(d["start"]) != 0 || num(d["length"]) != 20 {
		t.Fatalf("list: %v", d)
	}
	it := wantShape(t, "list item", items[0], map[string]string{"bk_scope_type": "string", "bk_scope_id": "string", "id": "number", "job_instance_id": "number",
		"name": "string", "operator": "string", "create_time": "number", "start_time": "number", "end_time": "number", "total_time": "number",
		"launch_mode": "number", "status": "number", "task_status": "number", "type": "number", "task_type": "number"})
	if num(it["id"]) != id || num(it["job_instance_id"]) != id || it["operator"] != "alice" || num(it["status"]) != 3 || num(it["task_status"]) != 3 ||
		num(it["type"]) != 1 || num(it["task_type"]) != 1 || num(it["launch_mode"]) != 2 || it["bk_scope_id"] != "1" {
		t.Errorf("list item: %v", it)
	}
	window := map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1", "create_time_start": before, "create_time_end": after}
	page := func(extra map[string]any) (total int64, ids []int64) {
		t.Helper()
		body := map[string]any{}
		for k, v := range window {
			body[k] = v
		}
		for k, v := range extra {
			body[k] = v
		}
		d := bkData(t, s, "POST", "/api/c/compapi/v2/jobv3/get_job_instance_list/", body)
		for _, it := range list(t, d["data"]) {
			ids = append(ids, num(it.(map[string]any)["id"]))
		}
		return num(d["total"]), ids
	}
	for _, c := range []struct {
		extra map[string]any
		total int64
		ids   []int64
	}{
		{nil, 3, []int64{id3, id2, id}},
		{map[string]any{"start": 1, "length": 1}, 3, []int64{id2}},
		{map[string]any{"ip": "127.0.0.83"}, 2, []int64{id3, id2}},
		{map[string]any{"status": 4}, 0, nil},
		{map[string]any{"type": 2}, 0, nil},
		{map[string]any{"launch_mode": 1}, 0, nil},
		{map[string]any{"bk_scope_id": "2"}, 0, nil},
		{map[string]any{"job_instance_id": id2, "name": "nothing like it"}, 1, []int64{id2}},
		{map[string]any{"create_time_start": after, "create_time_end": after + 1000}, 0, nil},
	} {
		if total, ids := page(c.extra); total != c.total || !slices.Equal(ids, c.ids) {
			t.Errorf("list %v: total %d ids %v, want %d %v", c.extra, total, ids, c.total, c.ids)
		}
	}
}

func TestBKRollingAndStepOperations(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 2, Agents: []string{"bkr1=127.0.0.91", "bkr2=127.0.0.92", "bkr3=127.0.0.93", "bkr4=127.0.0.94"}})
	l := testenv.NewLedger(t)
	ips := func(n int) []any {
		var out []any
		for i := 1; i <= n; i++ {
			out = append(out, map[string]any{"bk_cloud_id": 0, "ip": fmt.Sprintf("127.0.0.9%d", i)})
		}
		return out
	}
	run := func(name, content string, hosts int, rolling map[string]any) (int64, int64) {
		body := map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1", "task_name": name, "account_alias": "root", "script_language": 1,
			"script_content": b64(content), "target_server": map[string]any{"ip_list": ips(hosts)}}
		if rolling != nil {
			body["rolling_config"] = rolling
		}
		return bkSubmitted(t, s, "fast_execute_script", body, name)
	}
	operate := func(id, stepID int64, op int) {
		t.Helper()
		// operate_step_instance's example with these ids
		d := bkData(t, s, "POST", "/api/v3/operate_step_instance", fmt.Sprintf(`{
  "bk_scope_type": "biz",
  "bk_scope_id": "1",
  "job_instance_id": %d,
  "step_instance_id": %d,
  "operation_code": %d
}`, id, stepID, op))
		wantShape(t, "operate_step_instance", d, map[string]string{"step_instance_id": "number", "job_instance_id": "number"})
		if num(d["job_instance_id"]) != id || num(d["step_instance_id"]) != stepID {
			t.Errorf("operate %d: %v", op, d)
		}
	}
	waiting := func(job map[string]any, steps []map[string]any) bool {
		return num(job["status"]) == 7 && num(steps[0]["status"]) == 7
	}
	failOn93 := l.Append("$FLEETJOB_HOST_IP") + `; if [ "$FLEETJOB_HOST_IP" = 127.0.0.93 ] && [ ! -e ` + string(l) + `.fixed ]; then exit 3; fi`
	fails := `exit 3`
	failsOnce := `[ -e ` + string(l) + `.once ] || { touch ` + string(l) + `.once.$FLEETJOB_HOST_IP; exit 4; }`

	pause, pauseStep := run("pause", failOn93, 4, map[string]any{"expression": "1 50% 100%", "mode": 1})
	manual, manualStep := run("manual", "true", 4, map[string]any{"expression": "1 50% 100%", "mode": 4})
	ignore, ignoreStep := run("ignore", fails, 2, nil)
	skip, skipStep := run("skip", fails, 2, nil)
	retryAll, retryAllStep := run("retry-all", failsOnce, 2, nil)

	// mode 1 pauses after the batch where .93 failed; .94 has not run
	_, steps := bkWaitJob(t, s, pause, "paused", waiting)
	hosts := bkHostsOf(t, steps[0], false)
	if num(hosts["127.0.0.93"]["status"]) != 104 || num(hosts["127.0.0.93"]["exit_code"]) != 3 || num(hosts["127.0.0.94"]["status"]) != 5 {
		t.Errorf("paused hosts: %v", hosts)
	}
	if err := os.WriteFile(string(l)+".fixed", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	operate(pause, pauseStep, 2) // retry the failed hosts
	jb, steps := bkFinished(t, s, pause)
	if num(jb["status"]) != 3 || num(steps[0]["execute_count"]) != 1 || num(bkHostsOf(t, steps[0], false)["127.0.0.93"]["status"]) != 9 {
		t.Errorf("after retry: %v %v", jb, steps)
	}
	if got := testenv.Count(l.Lines(t)); got["127.0.0.93"] != 2 || got["127.0.0.91"] != 1 || got["127.0.0.94"] != 1 {
		t.Errorf("runs: %v", got)
	}

	// mode 4 (bk-job's enum for manual) waits after every batch: confirm
	// (6), then continue rolling (13)
	for batch, op := range []int{6, 13} {
		testenv.Eventually(t, 20*time.Second, func() bool {
			st := s.Job(t, manual).Steps[0]
			return st.Hold == schemas.HoldConfirm && st.Batch == batch+1
		}, "confirmation after batch %d", batch+1)
		if jb, steps := bkStatusOf(t, s, manual); !waiting(jb, steps) {
			t.Errorf("a step waiting for confirmation: %v %v", jb, steps)
		}
		operate(manual, manualStep, op)
	}
	if job, _ := bkFinished(t, s, manual); num(job["status"]) != 3 {
		t.Errorf("manual rolling: %v", job)
	}

	// a failed step: ignore the error (3), or skip it (12)
	for _, c := range []struct {
		id, step   int64
		op         int
		stepStatus int64
	}{{ignore, ignoreStep, 3, 6}, {skip, skipStep, 12, 5}} {
		job, steps := bkFinished(t, s, c.id)
		h := bkHostsOf(t, steps[0], false)["127.0.0.91"]
		if num(job["status"]) != 4 || num(steps[0]["status"]) != 4 || num(h["status"]) != 104 || num(h["error_code"]) != 104 || num(h["exit_code"]) != 3 {
			t.Errorf("failed job: %v %v", job, h)
		}
		operate(c.id, c.step, c.op)
		job, steps = bkWaitJob(t, s, c.id, "success after the operation", func(job map[string]any, _ []map[string]any) bool { return num(job["status"]) == 3 })
		if num(steps[0]["status"]) != c.stepStatus {
			t.Errorf("operation %d: step status %v, want %d", c.op, steps[0]["status"], c.stepStatus)
		}
	}

	// retry all hosts (8) of a step that failed once
	if job, _ := bkFinished(t, s, retryAll); num(job["status"]) != 4 {
		t.Errorf("retry-all job before: %v", job)
	}
	if err := os.WriteFile(string(l)+".once", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	operate(retryAll, retryAllStep, 8)
	jb, steps = bkWaitJob(t, s, retryAll, "success after retry all", func(job map[string]any, _ []map[string]any) bool { return num(job["status"]) == 3 })
	if num(steps[0]["execute_count"]) != 1 {
		t.Errorf("retry all: %v", steps[0])
	}

	// refused operations
	op := func(id, stepID int64, code int) string {
		return fmt.Sprintf(`{"bk_scope_type":"biz","bk_scope_id":"1","job_instance_id":%d,"step_instance_id":%d,"operation_code":%d}`, id, stepID, code)
	}
	bkFail(t, s, "POST", "/api/v3/operate_step_instance", op(ignore, ignoreStep, 4), 200, 1241007, "operation_code")
	bkFail(t, s, "POST", "/api/v3/operate_step_instance", op(ignore, skipStep, 2), 200, 1244007, "")
	bkFail(t, s, "POST", "/api/v3/operate_step_instance", op(ignore, ignoreStep+1, 2), 200, 1244007, "")
	bkFail(t, s, "POST", "/api/v3/operate_step_instance", op(ignore, ignoreStep, 6), 200, 1241003, "")
	bkFail(t, s, "POST", "/api/v3/operate_step_instance", op(ignore, ignoreStep, 10), 200, 1241003, "")
	bkFail(t, s, "POST", "/api/v3/operate_step_instance", strings.Replace(op(ignore, ignoreStep, 2), `"1"`, `"7"`, 1), 200, 1244006, "")
	// a refusal names the operation and the step by their BlueKing numbers
	bkFail(t, s, "POST", "/api/v3/operate_step_instance", op(retryAll, retryAllStep, 2), 200, 1241003, fmt.Sprintf("operation 2 on step instance %d", retryAllStep))
}

func TestBKFileTransferAndFileLogs(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1})
	startBKAgent(t, s, "bkf1", "127.0.0.85", 201)
	startBKAgent(t, s, "bkf2", "127.0.0.86", 203)
	startBKAgent(t, s, "bkf3", "127.0.0.87", 204)
	src, dst := t.TempDir(), t.TempDir()
	for name, content := range map[string]string{"a.txt": "alpha", "b.txt": "bravo!", "C.TXT": "not matched"} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// fast_transfer_file's example with these hosts and paths (its
	// third-party file sources left out: fleetjob has none)
	id, stepID := bkSubmitted(t, s, "fast_transfer_file", fmt.Sprintf(`{
  "bk_scope_type": "biz",
  "bk_scope_id": "1",
  "file_target_path": "%s/",
  "transfer_mode": 1,
  "file_source_list": [
    {
      "file_list": [
        "%s/REGEX:[a-z]*.txt"
      ],
      "account": {
        "id": 100
      },
      "server": {
        "host_id_list": [
          201
        ]
      },
      "file_type": 1
    }
  ],
  "target_server": {
    "host_id_list": [
      203,
      204
    ]
  },
  "account_id": 101
}`, dst, src), "API Quick Distribution File")
	// a missing source file fails in either mode; strict (1) also fails a
	// target whose directory is missing, force (2) creates it
	failing := map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1", "task_name": "strict", "file_target_path": dst + "/strict",
		"transfer_mode": 1, "account_alias": "root", "upload_speed_limit": 10, "download_speed_limit": 20, "timeout": 60,
		"file_source_list": []any{map[string]any{"file_list": []string{src + "/missing.txt", src + "/a.txt"}, "account": map[string]any{"alias": "root"},
			"server": map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.85"}}}}},
		"target_server": map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.86"}}}}
	strict, strictStep := bkSubmitted(t, s, "fast_transfer_file", failing, "strict")
	failing["file_source_list"].([]any)[0].(map[string]any)["file_list"] = []string{src + "/a.txt"}
	failing["task_name"], failing["file_target_path"] = "strict-dir", dst+"/nodir/deeper"
	strictDir, _ := bkSubmitted(t, s, "fast_transfer_file", failing, "strict-dir")
	failing["transfer_mode"], failing["task_name"], failing["file_target_path"] = 2, "force", dst+"/force"
	force, _ := bkSubmitted(t, s, "fast_transfer_file", failing, "force")

	spec := storedSpec(t, s, strict)
	f := spec.Steps[0].File
	if f == nil || !f.IsStrict() || f.UploadLimitMB != 10 || f.DownloadLimitMB != 20 || f.Owner != "root" || f.Sources[0].Account != "root" ||
		spec.Steps[0].Timeout != 60 || spec.Extra["bk_task_type"] != "2" {
		t.Errorf("strict spec: %+v %+v", spec, f)
	}
	if f := storedSpec(t, s, id).Steps[0].File; f.IsStrict() != true || f.Sources[0].Paths[0] != "REGEX:"+src+"/(?:[a-z]*.txt)" {
		t.Errorf("example spec: %+v", f)
	}

	job, steps := bkFinished(t, s, id)
	if num(job["status"]) != 3 || num(steps[0]["type"]) != 2 || num(steps[0]["status"]) != 3 {
		t.Fatalf("transfer: %v %v", job, steps)
	}
	hosts := bkHostsOf(t, steps[0], true) // targets only, never the source
	if len(hosts) != 2 || num(hosts["127.0.0.86"]["bk_host_id"]) != 203 || num(hosts["127.0.0.87"]["status"]) != 9 {
		t.Errorf("file step hosts: %v", hosts)
	}
	for name, want := range map[string]string{"a.txt": "alpha", "b.txt": "bravo!"} {
		if b, err := os.ReadFile(filepath.Join(dst, name)); err != nil || string(b) != want {
			t.Errorf("%s: %q %v", name, b, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dst, "C.TXT")); !os.IsNotExist(err) {
		t.Errorf("C.TXT does not match [a-z]*.txt but was sent: %v", err)
	}

	// the seed's file request: a target and the source in ip_list
	down := map[string]string{"mode": "number", "src_ip": "object", "src_path": "string", "dest_ip": "object", "dest_path": "string",
		"status": "number", "log_content": "string", "size": "string", "speed": "string", "process": "string"}
	up := without(without(down, "dest_ip"), "dest_path")
	ref := map[string]string{"bk_host_id": "number", "bk_cloud_id": "number", "ip": "string"}
	d := bkData(t, s, "POST", "/api/v3/batch_get_job_instance_ip_log", fmt.Sprintf(`{
    "bk_scope_type": "biz",
    "bk_scope_id": "1",
    "job_instance_id": %d,
    "step_instance_id": %d,
    "ip_list": [
        {
            "bk_cloud_id": 0,
            "ip": "127.0.0.86"
        },
        {
            "bk_cloud_id": 0,
            "ip": "127.0.0.85"
        }
    ]
}	`, id, stepID))
	_, fileEnv := bk(t, s, "POST", "/api/v3/batch_get_job_instance_ip_log", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1",
		"job_instance_id": id, "step_instance_id": stepID, "ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.86"}, map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.85"}}})
	sameShape(t, "seed 003 file example", fileEnv, examples(t, "seed003_bkjob.json")["file.response"], bkSeed003Extra)
	wantShape(t, "file batch", d, map[string]string{"log_type": "number", "task_instance_id": "number", "job_instance_id": "number", "step_instance_id": "number", "file_task_logs": "array"})
	tasks := list(t, d["file_task_logs"])
	if num(d["log_type"]) != 2 || len(tasks) != 2 {
		t.Fatalf("file_task_logs: %v", d)
	}
	target := wantShape(t, "target task", tasks[0], map[string]string{"bk_host_id": "number", "bk_cloud_id": "number", "ip": "string", "file_logs": "array"})
	source := wantShape(t, "source task", tasks[1], map[string]string{"bk_host_id": "number", "bk_cloud_id": "number", "ip": "string", "file_logs": "array"})
	if target["ip"] != "127.0.0.86" || num(target["bk_host_id"]) != 203 || source["ip"] != "127.0.0.85" || num(source["bk_host_id"]) != 201 {
		t.Errorf("file tasks: %v %v", target, source)
	}
	byPath := func(logs []any, shape map[string]string) map[string]map[string]any {
		out := map[string]map[string]any{}
		for _, l := range logs {
			m := wantShape(t, "file_log", l, shape)
			out[m["src_path"].(string)] = m
		}
		return out
	}
	downs := byPath(list(t, target["file_logs"]), down)
	a := downs[src+"/a.txt"]
	if len(downs) != 2 || a == nil || num(a["mode"]) != 1 || num(a["status"]) != 4 || a["dest_path"] != dst+"/a.txt" || a["size"] != "5.0 Bytes" ||
		a["process"] != "100%" || !strings.Contains(a["log_content"].(string), "FileName: "+dst+"/a.txt FileSize: 5.0 Bytes State: dest agent success download file") {
		t.Errorf("download logs: %v", downs)
	}
	if a != nil {
		srcIP := wantShape(t, "src_ip", a["src_ip"], ref)
		destIP := wantShape(t, "dest_ip", a["dest_ip"], ref)
		if srcIP["ip"] != "127.0.0.85" || num(srcIP["bk_host_id"]) != 201 || destIP["ip"] != "127.0.0.86" || num(destIP["bk_host_id"]) != 203 {
			t.Errorf("download hosts: %v %v", srcIP, destIP)
		}
	}
	ups := byPath(list(t, source["file_logs"]), up)
	if b := ups[src+"/b.txt"]; len(ups) != 2 || b == nil || num(b["mode"]) != 0 || num(b["status"]) != 4 || b["size"] != "6.0 Bytes" ||
		!strings.Contains(b["log_content"].(string), "FileName: "+src+"/b.txt FileSize: 6.0 Bytes State: source agent success upload file") {
		t.Errorf("upload logs: %v", ups)
	}
	// without the source in the list there is no upload side
	d = bkData(t, s, "POST", "/api/v3/batch_get_job_instance_ip_log", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1",
		"job_instance_id": id, "step_instance_id": stepID, "host_id_list": []int{204}})
	if tasks := list(t, d["file_task_logs"]); len(tasks) != 1 || len(list(t, tasks[0].(map[string]any)["file_logs"])) != 2 {
		t.Errorf("target alone: %v", tasks)
	}
	// one target's log holds its downloads and the uploads that fed it; a
	// source's, its uploads
	d = bkData(t, s, "GET", fmt.Sprintf("/api/v3/get_job_instance_ip_log?bk_scope_type=biz&bk_scope_id=1&job_instance_id=%d&step_instance_id=%d&bk_cloud_id=0&ip=127.0.0.87", id, stepID), nil)
	wantShape(t, "file ip log", d, map[string]string{"log_type": "number", "bk_host_id": "number", "ip": "string", "bk_cloud_id": "number", "file_logs": "array"})
	modes := map[int64]int{}
	for _, l := range list(t, d["file_logs"]) {
		modes[num(l.(map[string]any)["mode"])]++
	}
	if num(d["log_type"]) != 2 || modes[1] != 2 || modes[0] != 2 {
		t.Errorf("target ip log modes: %v", modes)
	}
	d = bkData(t, s, "GET", fmt.Sprintf("/api/v3/get_job_instance_ip_log?bk_scope_type=biz&bk_scope_id=1&job_instance_id=%d&step_instance_id=%d&bk_host_id=201", id, stepID), nil)
	if logs := list(t, d["file_logs"]); len(logs) != 2 || num(logs[0].(map[string]any)["mode"]) != 0 {
		t.Errorf("source ip log: %v", logs)
	}
	bkFail(t, s, "GET", fmt.Sprintf("/api/v3/get_job_instance_ip_log?bk_scope_type=biz&bk_scope_id=1&job_instance_id=%d&step_instance_id=%d&bk_cloud_id=0&ip=127.0.0.99", id, stepID), nil, 200, 1244002, "")

	// the strict job failed on its missing file: the source's log says so
	job, steps = bkFinished(t, s, strict)
	h := bkHostsOf(t, steps[0], true)["127.0.0.86"]
	if num(job["status"]) != 4 || num(h["status"]) != 203 || num(h["error_code"]) != 203 {
		t.Errorf("strict job: %v %v", job, h)
	}
	d = bkData(t, s, "POST", "/api/v3/batch_get_job_instance_ip_log", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1",
		"job_instance_id": strict, "step_instance_id": strictStep, "ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.85"}}})
	ups = byPath(list(t, list(t, d["file_task_logs"])[0].(map[string]any)["file_logs"]), up)
	if m := ups[src+"/missing.txt"]; m == nil || num(m["status"]) != 5 || !strings.Contains(m["log_content"].(string), "source agent failed to upload file") {
		t.Errorf("missing file's upload log: %v", ups)
	}
	job, steps = bkFinished(t, s, strictDir)
	if h := bkHostsOf(t, steps[0], true)["127.0.0.86"]; num(job["status"]) != 4 || num(h["error_code"]) != 202 {
		t.Errorf("strict mode, missing target directory: %v %v", job, h)
	}
	if _, err := os.Stat(filepath.Join(dst, "nodir")); !os.IsNotExist(err) {
		t.Errorf("strict mode created the target directory: %v", err)
	}
	if job, _ := bkFinished(t, s, force); num(job["status"]) != 3 {
		t.Errorf("force mode into a new directory: %v", job)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "force", "a.txt")); err != nil || string(b) != "alpha" {
		t.Errorf("force mode sent %q %v", b, err)
	}
}

func TestBKTerminate(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"bkt=127.0.0.88"}})
	// through the ESB, credentials in the body; with a callback URL the
	// workers deliver
	code, env := bkWith(t, s, "POST", "/api/c/compapi/v2/jobv3/fast_execute_script/", map[string]any{
		"bk_app_code": "esb_test", "bk_app_secret": s.Token, "bk_username": "bob", "bk_scope_type": "biz", "bk_scope_id": "1",
		"script_content": b64("sleep 30"), "script_language": 1, "account_alias": "root", "callback_url": "http://127.0.0.1:9/cb",
		"target_server": map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.88"}}},
	}, map[string]string{"Authorization": ""})
	if code != 200 {
		t.Fatalf("ESB submit: %d %v", code, env)
	}
	id := num(env["data"].(map[string]any)["job_instance_id"])
	if spec := storedSpec(t, s, id); spec.CallbackURL != "http://127.0.0.1:9/cb" || spec.Owner != "bob" || spec.Source != "esb_test" {
		t.Errorf("spec: %+v", spec)
	}
	bkWaitJob(t, s, id, "running", func(job map[string]any, steps []map[string]any) bool {
		h := list(t, steps[0]["step_ip_result_list"])
		return num(job["status"]) == 2 && len(h) == 1 && num(h[0].(map[string]any)["status"]) == 7
	})
	terminate := fmt.Sprintf(`{
  "bk_scope_type": "biz",
  "bk_scope_id": "1",
  "job_instance_id": %d,
  "operation_code": 1
}`, id)
	bkFail(t, s, "POST", "/api/v3/operate_job_instance", strings.Replace(terminate, `"1",`, `"2",`, 1), 200, 1244006, "")
	bkFail(t, s, "POST", "/api/v3/operate_job_instance", strings.Replace(terminate, `"operation_code": 1`, `"operation_code": 2`, 1), 200, 1241007, "operation_code")
	d := bkData(t, s, "POST", "/api/v3/operate_job_instance", terminate)
	wantShape(t, "operate_job_instance", d, map[string]string{"job_instance_id": "number"})
	if num(d["job_instance_id"]) != id {
		t.Errorf("terminate: %v", d)
	}
	job, steps := bkFinished(t, s, id)
	h := bkHostsOf(t, steps[0], false)["127.0.0.88"]
	if num(job["status"]) != 11 || num(steps[0]["status"]) != 11 || num(h["status"]) != 403 {
		t.Errorf("terminated: %v %v %v", job, steps[0], h)
	}
	bkFail(t, s, "POST", "/api/v3/operate_job_instance", terminate, 200, 1241003, "")
}

func TestBKAuthAndBadInputQueueNothing(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{})
	before := s.CommandCount(t)
	script := func(change map[string]any) map[string]any {
		b := map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1", "script_content": b64("echo hi"), "script_language": 1,
			"account_alias": "root", "target_server": map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.89"}}}}
		for k, v := range change {
			if v == nil {
				delete(b, k)
			} else {
				b[k] = v
			}
		}
		return b
	}
	file := func(change map[string]any) map[string]any {
		b := map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1", "file_target_path": "/tmp/x", "account_alias": "root",
			"file_source_list": []any{map[string]any{"file_list": []string{"/etc/hostname"}, "account": map[string]any{"alias": "root"},
				"server": map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.89"}}}}},
			"target_server": map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.90"}}}}
		for k, v := range change {
			b[k] = v
		}
		return b
	}
	// authentication: none, a wrong secret, a header that is not JSON, and
	// body credentials on a gateway path
	for _, hdr := range []map[string]string{
		{"Authorization": ""},
		{"Authorization": "", "X-Bkapi-Authorization": `{"bk_app_code": "ci", "bk_app_secret": "wrong"}`},
		{"Authorization": "", "X-Bkapi-Authorization": "bk_app_secret=" + s.Token},
		{"X-Bkapi-Authorization": `{"bk_app_code": "ci"}`}, // the native bearer token is not a BlueKing credential
	} {
		code, env := bkWith(t, s, "POST", "/api/v3/fast_execute_script", script(nil), hdr)
		if code != 401 || env["result"] != false || num(env["code"]) != 1240005 || env["data"] != nil {
			t.Errorf("auth %v: %d %v", hdr, code, env)
		}
	}
	code, env := bkWith(t, s, "POST", "/api/v3/fast_execute_script", script(map[string]any{"bk_app_code": "ci", "bk_app_secret": s.Token}), map[string]string{"Authorization": ""})
	if code != 401 || num(env["code"]) != 1240005 {
		t.Errorf("body credentials on the gateway: %d %v", code, env)
	}
	code, env = bkWith(t, s, "GET", "/api/c/compapi/v2/jobv3/get_job_instance_status/?bk_app_code=ci&bk_app_secret="+s.Token+"&bk_scope_type=biz&bk_scope_id=1&job_instance_id=999", nil, map[string]string{"Authorization": ""})
	if code != 200 || num(env["code"]) != 1244006 {
		t.Errorf("ESB query credentials: %d %v", code, env)
	}

	for _, c := range []struct {
		name, api string
		body      any
		status    int
		code      int
		field     string
	}{
		{"malformed", "fast_execute_script", `{"bk_scope_type": `, 200, 1240003, ""},
		{"no scope", "fast_execute_script", script(map[string]any{"bk_scope_type": nil, "bk_scope_id": nil}), 200, 1241007, "bk_scope_type"},
		{"bad scope type", "fast_execute_script", script(map[string]any{"bk_scope_type": "app"}), 200, 1241007, "bk_scope_type"},
		{"unknown field", "fast_execute_script", script(map[string]any{"script_type": 1}), 200, 1241007, "script_type"},
		{"no script", "fast_execute_script", script(map[string]any{"script_content": nil}), 200, 1241007, "script_content"},
		{"script library", "fast_execute_script", script(map[string]any{"script_content": nil, "script_id": "s1"}), 200, 1243001, "script_version_id"},
		{"not base64", "fast_execute_script", script(map[string]any{"script_content": "!!!"}), 200, 1241007, "script_content"},
		{"powershell", "fast_execute_script", script(map[string]any{"script_language": 5}), 200, 1241011, "script_language"},
		{"no language", "fast_execute_script", script(map[string]any{"script_language": nil}), 200, 1241007, "script_language"},
		{"unbalanced quote", "fast_execute_script", script(map[string]any{"script_param": b64(`a "b`)}), 200, 1241007, "script_param"},
		{"timeout 0", "fast_execute_script", script(map[string]any{"timeout": 0}), 200, 1241007, "timeout"},
		{"timeout too long", "fast_execute_script", script(map[string]any{"timeout": 86401}), 200, 1241007, "timeout"},
		{"no account", "fast_execute_script", script(map[string]any{"account_alias": nil}), 200, 1241007, "account_alias"},
		{"bad account", "fast_execute_script", script(map[string]any{"account_alias": "Root User"}), 200, 1241007, "account_alias"},
		{"sensitive 2", "fast_execute_script", script(map[string]any{"is_param_sensitive": 2}), 200, 1241007, "is_param_sensitive"},
		{"no hosts", "fast_execute_script", script(map[string]any{"target_server": map[string]any{}}), 200, 1244001, "target_server"},
		{"unknown host id", "fast_execute_script", script(map[string]any{"target_server": map[string]any{"host_id_list": []int{777}}}), 200, 1243053, "target_server.host_id_list[0]"},
		{"dynamic group", "fast_execute_script", script(map[string]any{"target_server": map[string]any{"dynamic_group_list": []any{map[string]any{"id": "blo8gojho0skft7pr5q0"}}}}), 200, 1241011, "target_server.dynamic_group_list"},
		{"bad ip", "fast_execute_script", script(map[string]any{"target_server": map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "10.0.0"}}}}), 200, 1241007, "target_server.ip_list[0]"},
		{"no cloud", "fast_execute_script", script(map[string]any{"target_server": map[string]any{"ip_list": []any{map[string]any{"ip": "10.0.0.1"}}}}), 200, 1241007, "target_server.ip_list[0].bk_cloud_id"},
		{"bad rolling", "fast_execute_script", script(map[string]any{"rolling_config": map[string]any{"expression": "0 50%", "mode": 1}}), 200, 1244026, "rolling_config.expression"},
		{"rolling mode", "fast_execute_script", script(map[string]any{"rolling_config": map[string]any{"expression": "1", "mode": 5}}), 200, 1241007, "rolling_config.mode"},
		{"callback", "fast_execute_script", script(map[string]any{"callback_url": "ftp://x"}), 200, 1241007, "callback_url"},
		{"dangerous", "fast_execute_script", script(map[string]any{"script_content": b64("rm -rf /")}), 200, 1244019, ""},
		{"relative target", "fast_transfer_file", file(map[string]any{"file_target_path": "tmp/x"}), 200, 1241007, "file_target_path"},
		{"third-party source", "fast_transfer_file", file(map[string]any{"file_source_list": []any{map[string]any{"file_list": []string{"bucket/x"}, "file_type": 3, "file_source_id": 1}}}), 200, 1241011, "file_source_list[0].file_type"},
		{"source without account", "fast_transfer_file", file(map[string]any{"file_source_list": []any{map[string]any{"file_list": []string{"/x"}, "server": map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.89"}}}}}}), 200, 1241007, "file_source_list[0].account"},
		{"relative source", "fast_transfer_file", file(map[string]any{"file_source_list": []any{map[string]any{"file_list": []string{"x"}, "account": map[string]any{"id": 1}, "server": map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.89"}}}}}}), 200, 1241007, "file_source_list[0].file_list[0]"},
		{"source without hosts", "fast_transfer_file", file(map[string]any{"file_source_list": []any{map[string]any{"file_list": []string{"/x"}, "account": map[string]any{"id": 1}}}}), 200, 1244001, "file_source_list[0].server"},
		{"transfer mode", "fast_transfer_file", file(map[string]any{"transfer_mode": 3}), 200, 1241007, "transfer_mode"},
		{"speed", "fast_transfer_file", file(map[string]any{"upload_speed_limit": -1}), 200, 1241007, "upload_speed_limit"},
		{"rename", "fast_transfer_file", file(map[string]any{"file_target_name": "y"}), 200, 1241011, "file_target_name"},
		{"status id 0", "get_job_instance_status", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1", "job_instance_id": 0}, 200, 1241007, "job_instance_id"},
		{"status unknown", "get_job_instance_status", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1", "job_instance_id": 424242}, 200, 1244006, ""},
		{"log no host", "get_job_instance_ip_log", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1", "job_instance_id": 1, "step_instance_id": 1000}, 200, 1241007, "ip"},
		{"batch no hosts", "batch_get_job_instance_ip_log", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1", "job_instance_id": 1, "step_instance_id": 1000}, 200, 1241007, "ip_list"},
		{"batch no step", "batch_get_job_instance_ip_log", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1", "job_instance_id": 1, "host_id_list": []int{1}}, 200, 1241007, "step_instance_id"},
		{"list no window", "get_job_instance_list", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1"}, 200, 1241007, "create_time_start"},
		{"list reversed", "get_job_instance_list", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1", "create_time_start": 2000, "create_time_end": 1000}, 200, 1241002, "create_time_start"},
		{"list 31 days", "get_job_instance_list", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1", "create_time_start": 1546272000000, "create_time_end": 1577807999999}, 200, 1244020, "create_time_end"},
		{"list length", "get_job_instance_list", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1", "create_time_start": 0, "create_time_end": 1000, "length": 1001}, 200, 1241007, "length"},
		{"list status", "get_job_instance_list", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1", "create_time_start": 0, "create_time_end": 1000, "status": 99}, 200, 1241007, "status"},
		{"terminate unknown", "operate_job_instance", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1", "job_instance_id": 424242, "operation_code": 1}, 200, 1244006, ""},
		{"step op 5", "operate_step_instance", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "1", "job_instance_id": 1, "step_instance_id": 1000, "operation_code": 5}, 200, 1241007, "operation_code"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bkFail(t, s, "POST", "/api/v3/"+c.api, c.body, c.status, c.code, c.field)
		})
	}
	bkFail(t, s, "GET", "/api/v3/fast_execute_script", nil, 405, 1240003, "")
	bkFail(t, s, "POST", "/api/v3/no_such_api/", map[string]any{}, 404, 1239003, "")
	if got := s.CommandCount(t); got != before {
		t.Errorf("bad input queued %d commands", got-before)
	}
	// the deprecated bk_biz_id alone is a scope; the ESB's own credential
	// keys are not unknown fields
	d := bkData(t, s, "GET", "/api/c/compapi/v2/jobv3/get_job_instance_list?bk_biz_id=1&create_time_start=0&create_time_end=1000&bk_token=x", nil)
	if num(d["total"]) != 0 || len(list(t, d["data"])) != 0 || num(d["length"]) != 20 {
		t.Errorf("empty list: %v", d)
	}
}
