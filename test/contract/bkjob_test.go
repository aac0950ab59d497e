package contract

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// The BlueKing Job surface against a real system: each API is fed the
// documented JSON example from docs/bkjob-api-reference.md (hosts, ids and
// paths adapted) and its answer is compared with the documented shape.

func TestBKScriptStatusLogsAndList(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1})
	startBKAgent(t, s, "bk1", "127.0.0.81", 101)
	startBKAgent(t, s, "bk2", "127.0.0.82", 102)
	s.StartAgent(t, "bk3", "127.0.0.83") // no host id: answers keep the seed's shape
	before := time.Now().Add(-time.Minute).UnixMilli()

	// fast_execute_script, the gateway example: the script comes in
	// script_content (fleetjob has no script library, so the version id
	// is ignored), "echo $1" with "hello"; account_id 1000 is the alias an
	// admin gave that BlueKing id (root here), resolved through the
	// scope's accounts.
	if code, b := s.Do(t, "PUT", "/v1/accounts/global/root", map[string]any{"os_user": "root", "bk_account_id": 1000}, nil); code != 200 {
		t.Fatalf("PUT account: %d %s", code, b)
	}
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
		sc.Interpreter != "bash" || !slices.Equal(sc.Args, []string{"hello"}) || sc.Sensitive || sc.User != "root" || sc.UserAlias != schemas.DefaultAccountAlias || spec.Steps[0].Timeout != 1000 ||
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
		{"relative source", "fast_transfer_file", file(map[string]any{"file_source_list": []any{map[string]any{"file_list": []string{"x"}, "account": map[string]any{"alias": "root"}, "server": map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.89"}}}}}}), 200, 1241007, "file_source_list[0].file_list[0]"},
		{"source without hosts", "fast_transfer_file", file(map[string]any{"file_source_list": []any{map[string]any{"file_list": []string{"/x"}, "account": map[string]any{"alias": "root"}}}}), 200, 1244001, "file_source_list[0].server"},
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
