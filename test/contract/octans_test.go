package contract

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/testenv"
)

type octansAnswer struct {
	Code    int             `json:"code"`
	Content json.RawMessage `json:"content"`
	Message string          `json:"message"`
}

func octans(t *testing.T, s *testenv.System, path string, body any, headers map[string]string) (int, octansAnswer) {
	t.Helper()
	h := map[string]string{"X-CORRELATION-ID": "1-1", "X-RESOURCE": "orion"} // with the admin bearer token: octans is closed by default
	for k, v := range headers {
		h[k] = v
	}
	var a octansAnswer
	code, b := s.Do(t, "POST", path, body, h)
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("%s: not an octans envelope: %s", path, b)
	}
	return code, a
}

type octansCheck struct {
	CreateTime string  `json:"create_time"`
	Err        *string `json:"err"`
	ID         int64   `json:"id"`
	Log        string  `json:"log"`
	Nodes      string  `json:"nodes"`
	Status     int     `json:"status"`
	UpdateTime string  `json:"update_time"`
}

func octansWait(t *testing.T, s *testenv.System, ref map[string]any) octansCheck {
	t.Helper()
	var c octansCheck
	testenv.Eventually(t, 20*time.Second, func() bool {
		code, a := octans(t, s, "/api/check", ref, nil)
		if code != 200 || a.Code != 0 {
			t.Fatalf("check: %d %+v", code, a)
		}
		if err := json.Unmarshal(a.Content, &c); err != nil {
			t.Fatal(err)
		}
		return c.Status >= 2
	}, "octans task %v to end", ref)
	return c
}

func TestOctansRunCheckGetlog(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1", "a2=127.0.0.2"}})
	name := "192.201.11.31_install_nginx_1501169594802406967"
	code, a := octans(t, s, "/api/run", map[string]any{
		"nodes": []string{"127.0.0.1", "127.0.0.2"}, "user": "root", "name": name,
		"tasks":  `echo "installing $PKG on $FLEETJOB_HOST_IP"`,
		"params": map[string]any{"PKG": "nginx"}, "fork_num": 5,
	}, nil)
	if code != 200 || a.Code != 0 {
		t.Fatalf("run: %d %+v", code, a)
	}
	var created struct{ ID int64 }
	json.Unmarshal(a.Content, &created)
	if created.ID <= 0 {
		t.Fatalf("run: no id in %s", a.Content)
	}
	c := octansWait(t, s, map[string]any{"id": created.ID})
	if c.Status != 2 || c.Err != nil || c.ID != created.ID {
		t.Fatalf("check: got status %d err %v, want 2 SUCCESS", c.Status, c.Err)
	}
	if _, err := time.Parse(http.TimeFormat, c.CreateTime); err != nil {
		t.Errorf("create_time %q is not RFC 1123 GMT: %v", c.CreateTime, err)
	}
	var nodes []string
	if err := json.Unmarshal([]byte(c.Nodes), &nodes); err != nil || strings.Join(nodes, ",") != "127.0.0.1,127.0.0.2" {
		t.Errorf("nodes: got %q (%v)", c.Nodes, err)
	}
	var logs []struct {
		Host   string `json:"host"`
		Status int    `json:"status"`
		RC     *int   `json:"rc"`
		Stdout string `json:"stdout"`
	}
	if err := json.Unmarshal([]byte(c.Log), &logs); err != nil || len(logs) != 2 {
		t.Fatalf("log: got %q (%v)", c.Log, err)
	}
	for _, l := range logs {
		if l.Status != 2 || l.RC == nil || *l.RC != 0 || l.Stdout != "installing nginx on "+l.Host {
			t.Errorf("node %s: %+v", l.Host, l)
		}
	}
	// by name too
	if byName := octansWait(t, s, map[string]any{"name": name}); byName.ID != created.ID {
		t.Errorf("check by name: got id %d, want %d", byName.ID, created.ID)
	}
	code, a = octans(t, s, "/api/getlog", map[string]any{"host": "127.0.0.2", "source": "orion"}, nil)
	var rows []string
	json.Unmarshal(a.Content, &rows)
	if code != 200 || a.Code != 0 || len(rows) != 1 {
		t.Fatalf("getlog: %d %+v", code, a)
	}
	for _, part := range []string{"global_id = 1-1", "source = orion", "host = 127.0.0.2", "result = ok", "create_time = 20", "end_time = 20"} {
		if !strings.Contains(rows[0], part) {
			t.Errorf("getlog row %q lacks %q", rows[0], part)
		}
	}
	if code, a := octans(t, s, "/api/getlog", map[string]any{"host": "127.0.0.2", "source": "hubble"}, nil); code != 200 || a.Message != "task not found..." {
		t.Errorf("getlog other source: %d %+v", code, a)
	}
}

func TestOctansTaskListAndFailure(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1", "a2=127.0.0.2"}})
	code, a := octans(t, s, "/api/run", map[string]any{
		"nodes": []string{"127.0.0.1", "127.0.0.2"}, "user": "root", "name": "multi",
		"tasks": []any{
			map[string]any{"name": "first", "shell": "echo one"},
			map[string]any{"name": "only on .1", "command": `test "$FLEETJOB_HOST_IP" = 127.0.0.1`},
			map[string]any{"raw": "echo three"},
		},
		"fork_num": "1",
	}, nil)
	if code != 200 || a.Code != 0 {
		t.Fatalf("run: %d %+v", code, a)
	}
	c := octansWait(t, s, map[string]any{"name": "multi"})
	if c.Status != 5 || c.Err == nil {
		t.Fatalf("got status %d err %v, want 5 PartlySuccess with an err", c.Status, c.Err)
	}
	var logs []struct {
		Host   string `json:"host"`
		Status int    `json:"status"`
		RC     *int   `json:"rc"`
		Stdout string `json:"stdout"`
	}
	json.Unmarshal([]byte(c.Log), &logs)
	for _, l := range logs {
		switch l.Host {
		case "127.0.0.1":
			if l.Status != 2 || !strings.Contains(l.Stdout, "three") {
				t.Errorf("127.0.0.1: %+v", l)
			}
		case "127.0.0.2":
			if l.Status != 3 || l.RC == nil || *l.RC != 1 || strings.Contains(l.Stdout, "three") || !strings.Contains(l.Stdout, "TASK [only on .1]") {
				t.Errorf("127.0.0.2 should stop at the failing task: %+v", l)
			}
		}
	}
}

func TestOctansDuplicateNameStopAndErrors(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.1"}})
	run := map[string]any{"nodes": []string{"127.0.0.1"}, "user": "root", "name": "long", "tasks": "sleep 60"}
	code, a := octans(t, s, "/api/parallel_run", run, nil)
	if code != 200 || a.Code != 0 {
		t.Fatalf("parallel_run: %d %+v", code, a)
	}
	before := s.CommandCount(t)
	code, a = octans(t, s, "/api/run", run, nil)
	if code != 200 || a.Code != -1 || a.Message != "task name is duplicate" {
		t.Errorf("duplicate: got %d %+v", code, a)
	}
	var id struct{ ID int64 }
	testenv.Eventually(t, 20*time.Second, func() bool {
		_, a := octans(t, s, "/api/check", map[string]any{"name": "long"}, nil)
		var c octansCheck
		json.Unmarshal(a.Content, &c)
		id.ID = c.ID
		return c.Status == 1
	}, "task running")
	if code, a := octans(t, s, "/api/stop", map[string]any{"id": id.ID, "name": "long"}, nil); code != 200 || a.Code != 0 {
		t.Fatalf("stop: %d %+v", code, a)
	}
	if c := octansWait(t, s, map[string]any{"id": id.ID}); c.Status != 4 {
		t.Errorf("after stop: status %d, want 4 STOPPED", c.Status)
	}
	for _, c := range []struct {
		path string
		body any
		code int // the octans document answers every failure with HTTP 200 and code -1
		msg  string
	}{
		{"/api/run", `{"nodes": [`, 200, "json encode error"},
		{"/api/run", `{"nodes":["127.0.0.1",],"name":"x"}`, 200, "json encode error"},
		{"/api/run", map[string]any{"nodes": []string{}, "name": "x", "tasks": "true"}, 200, "param error, error: nodes"},
		{"/api/run", map[string]any{"nodes": []string{"nope"}, "name": "x", "tasks": "true"}, 200, "param error, error: nodes[0]"},
		{"/api/run", map[string]any{"nodes": []string{"127.0.0.1"}, "tasks": "true"}, 200, "param error, error: name"},
		{"/api/run", map[string]any{"nodes": []string{"127.0.0.1"}, "name": "x"}, 200, "param error, error: tasks"},
		{"/api/run", map[string]any{"nodes": []string{"127.0.0.1"}, "name": "x", "tasks": []any{map[string]any{"copy": "a"}}}, 200, "param error, error: tasks"},
		{"/api/run", map[string]any{"nodes": []string{"127.0.0.1"}, "name": "x", "tasks": "true", "fork_num": -1}, 200, "param error, error: fork_num"},
		{"/api/run", map[string]any{"nodes": []string{"127.0.0.1"}, "name": "x", "tasks": "true", "bogus": 1}, 200, "param error, error: bogus"},
		{"/api/check", map[string]any{"id": 424242}, 200, "task not found..."},
		{"/api/check", map[string]any{"name": "never-ran"}, 200, "task not found..."},
		{"/api/stop", map[string]any{"name": "never-ran"}, 200, "task not found..."},
		{"/api/check", map[string]any{}, 200, "param error, error: id"},
		{"/api/getlog", map[string]any{"host": "1.2.3"}, 200, "param error, error: host"},
		{"/api/check", `[]`, 200, "param error"},
	} {
		code, a := octans(t, s, c.path, c.body, nil)
		if code != c.code || a.Code != -1 || !strings.HasPrefix(a.Message, c.msg) {
			t.Errorf("%s %v: got %d %+v, want %d %q", c.path, c.body, code, a, c.code, c.msg)
		}
	}
	if after := s.CommandCount(t); after != before+1 { // only the stop
		t.Errorf("bad octans requests queued %d commands", after-before-1)
	}
}

// TestSeed001Examples feeds every example of the octans document (seed
// 001, testdata/seed001_octans.json) to the server, in the document's
// order, and compares each answer with the documented one: HTTP 200, the
// key set and types of the envelope and its content, and the documented
// error messages word for word.
func TestSeed001Examples(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"a1=127.0.0.61", "a2=192.201.11.31"}})
	ex := examples(t, "seed001_octans.json")
	call := func(what, path string, body any) map[string]any {
		t.Helper()
		code, b := s.Do(t, "POST", path, body, map[string]string{"X-CORRELATION-ID": "1-1", "X-RESOURCE": "orion"}) // with the admin bearer token: octans is closed by default
		if code != http.StatusOK {
			t.Errorf("%s: HTTP %d %s, the document answers 200", what, code, b)
		}
		got, _ := asJSON(t, b).(map[string]any)
		return got
	}
	same := func(what string, got map[string]any) {
		t.Helper()
		sameShape(t, what, got, ex[what], nil)
		if want, _ := ex[what].(map[string]any)["message"].(string); want != "" && !strings.HasPrefix(fmt.Sprint(got["message"]), want) {
			t.Errorf("%s: message %q, documented %q", what, got["message"], want)
		}
	}

	// 1. run
	run := ex["run.request"].(map[string]any)
	ran := call("run", "/api/run", run)
	same("run.response", ran)
	id := num(ran["content"].(map[string]any)["id"])
	same("run.duplicate", call("run again", "/api/run", run))
	same("run.malformed", call("malformed", "/api/run", `{"nodes":["127.0.0.61",],}`))
	same("run.param_error", call("no nodes", "/api/run", map[string]any{"name": "x", "content": "true"}))

	// 3. check, by id and by name (the document's request carries both)
	check := map[string]any{"id": id, "name": run["name"]}
	var checked map[string]any
	testenv.Eventually(t, 20*time.Second, func() bool {
		checked = call("check", "/api/check", check)
		c, _ := checked["content"].(map[string]any)
		return num(c["status"]) == 2
	}, "the run to succeed")
	same("check.response", checked)
	c := checked["content"].(map[string]any)
	var logs []map[string]any
	if err := json.Unmarshal([]byte(c["log"].(string)), &logs); err != nil || len(logs) != 1 || logs[0]["stdout"] != "installing nginx" {
		t.Errorf("check log %q: %v", c["log"], err)
	}
	if c["nodes"] != `["127.0.0.61"]` {
		t.Errorf("check nodes %q", c["nodes"])
	}
	if _, err := time.Parse(http.TimeFormat, c["create_time"].(string)); err != nil {
		t.Errorf("create_time %q is not the documented RFC 1123 GMT form: %v", c["create_time"], err)
	}
	unknown := func(req string) map[string]any { // the documented request, with an id no task has
		m := maps.Clone(ex[req].(map[string]any))
		m["id"] = 424242
		return m
	}
	same("stop.not_found", call("check unknown", "/api/check", unknown("check.request")))

	// 4. getlog: the host the run ran on, from the source it came from
	rows := call("getlog", "/api/getlog", map[string]any{"host": "127.0.0.61", "source": "orion"})
	same("getlog.response", rows)
	if row := fmt.Sprint(rows["content"]); !strings.Contains(row, "global_id = 1-1, source = orion, create_time = ") || !strings.Contains(row, "host = 127.0.0.61") {
		t.Errorf("getlog row %s", row)
	}

	// 5. parallel_run, then 2. stop it while it runs
	par := call("parallel_run", "/api/parallel_run", ex["parallel_run.request"])
	same("parallel_run.response", par)
	pid := num(par["content"].(map[string]any)["id"])
	testenv.Eventually(t, 20*time.Second, func() bool {
		c, _ := call("check", "/api/check", map[string]any{"id": pid})["content"].(map[string]any)
		return num(c["status"]) == 1
	}, "parallel_run running")
	stop := ex["stop.request"].(map[string]any)
	same("stop.response", call("stop", "/api/stop", map[string]any{"id": pid, "name": stop["name"]}))
	same("stop.not_found", call("stop unknown", "/api/stop", unknown("stop.request")))
}
