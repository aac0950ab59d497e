package contract

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetjob/fleetjob/internal/testenv"
)

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
	// third-party file sources left out: fleetjob has none); its account
	// ids 100 (source) and 101 (targets) are aliases an admin gave them
	for alias, body := range map[string]map[string]any{
		"global/root":  {"os_user": "root", "bk_account_id": 100},
		"biz:1/deploy": {"os_user": "root", "bk_account_id": 101},
	} {
		if code, b := s.Do(t, "PUT", "/v1/accounts/"+alias, body, nil); code != 200 {
			t.Fatalf("PUT account %s: %d %s", alias, code, b)
		}
	}
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
