package contract

import (
	"context"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/internal/roles"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
)

// Helpers of the BlueKing contract suite: calls in the envelope, agents with
// host ids, and the documented shapes answers are compared with.

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
	s.EnrolGrant(t, id, filepath.Join(s.Dir, "agent-"+id), map[string]any{"hosts": []string{ip}, "host_ids": []int64{hostID}})
	p.NC = s.AgentConn(t, id, nats.MaxReconnects(-1)) // its own identity; makes its consumer
	js, err := jetstream.New(p.NC)
	if err != nil {
		t.Fatal(err)
	}
	p.JS = js
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
func storedSpec(t *testing.T, s *testenv.System, id int64) schemas.JobSpec { return s.Spec(t, id) }

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
