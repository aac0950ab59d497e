package test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// Execution accounts: aliases per scope, resolved at submit; scripts and
// file transfers run as the OS user. The machine runs the tests as root
// and has the nobody account.

func needRootAndNobody(t *testing.T) (uid, gid uint32) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("running as another account needs root")
	}
	out, err := exec.Command("id", "-u", "nobody").Output()
	if err != nil {
		t.Skip("no nobody account")
	}
	var u, g uint32
	fmt.Sscan(string(out), &u)
	out, _ = exec.Command("id", "-g", "nobody").Output()
	fmt.Sscan(string(out), &g)
	return u, g
}

// putAccount registers an alias through the native API.
func putAccount(t *testing.T, s *testenv.System, scope, alias string, body map[string]any) {
	t.Helper()
	if code, b := s.Do(t, "PUT", "/v1/accounts/"+scope+"/"+alias, body, nil); code != 200 {
		t.Fatalf("PUT account %s/%s: %d %s", scope, alias, code, b)
	}
}

// storedSpec reads a job's spec as the workers stored it.
func storedSpec(t *testing.T, s *testenv.System, id int64) schemas.JobSpec { return s.Spec(t, id) }

// openDir is a directory anyone may write into (t.TempDir's parent is
// closed to other users).
func openDir(t *testing.T, mode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fleetjob-accounts-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

func ownerOf(t *testing.T, path string) (uid, gid uint32) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

// A script whose alias maps to nobody runs as nobody, with exactly
// nobody's groups; the stored spec keeps the alias beside the OS user.
// An OS user named directly, without an alias for it, is refused.
func TestScriptRunsAsTheAliasUser(t *testing.T) {
	t.Parallel()
	uid, _ := needRootAndNobody(t)
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"ac1=127.0.0.71"}})
	putAccount(t, s, "global", "nob", map[string]any{"os_user": "nobody"})
	body := map[string]any{"name": "as nobody", "targets": []string{"127.0.0.71"},
		"steps": []any{map[string]any{"script": map[string]any{"content": "id -u; id -G; echo $HOME $USER", "user": "nob"}}}}
	id := submit(t, s, body, nil)
	if sum := waitJob(t, s, id, 30*time.Second); sum.Status != schemas.JobSuccess {
		t.Fatalf("job %s: %+v", sum.Status, hosts(t, s, id))
	}
	lines := readLog(t, s, id, "127.0.0.71", 0, 10).Lines
	wantGroups, _ := exec.Command("id", "-G", "nobody").Output()
	if len(lines) != 3 || lines[0] != fmt.Sprint(uid) {
		t.Fatalf("output %q, want uid %d first", lines, uid)
	}
	got, want := strings.Fields(lines[1]), strings.Fields(string(wantGroups))
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("groups %v, want nobody's %v", got, want)
	}
	if !strings.HasSuffix(lines[2], " nobody") {
		t.Errorf("HOME and USER %q, want nobody's", lines[2])
	}
	if sc := storedSpec(t, s, id).Steps[0].Script; sc.User != "nobody" || sc.UserAlias != "nob" {
		t.Errorf("stored script user %q alias %q, want nobody and nob", sc.User, sc.UserAlias)
	}

	// "nobody" itself is no alias of this system: refused, nothing queued.
	before := s.CommandCount(t)
	body["steps"] = []any{map[string]any{"script": map[string]any{"content": "id -u", "user": "nobody"}}}
	code, b := s.Do(t, "POST", "/v1/jobs", body, nil)
	if code != 400 || !strings.Contains(string(b), "steps[0].script.user") || !strings.Contains(string(b), "unknown account alias") {
		t.Fatalf("unregistered alias: %d %s, want 400 naming steps[0].script.user", code, b)
	}
	if after := s.CommandCount(t); after != before {
		t.Fatalf("a refused job queued %d commands", after-before)
	}
}

// A file step reads its sources as the source account: /etc/shadow as
// nobody fails on its source host, with the reason in the file log, and
// nothing reaches the destination. Files copied as nobody belong to
// nobody, and so do the directories made for them.
func TestFileStepMovesFilesAsTheAccount(t *testing.T) {
	t.Parallel()
	uid, gid := needRootAndNobody(t)
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"ac2=127.0.0.72"}})
	putAccount(t, s, "global", "nob", map[string]any{"os_user": "nobody"})
	dst := openDir(t, 0o777)
	shadow := map[string]any{"name": "steal", "targets": []string{"127.0.0.72"}, "steps": []any{map[string]any{"file": map[string]any{
		"sources":     []any{map[string]any{"hosts": []string{"127.0.0.72"}, "paths": []string{"/etc/shadow"}, "account": "nob"}},
		"destination": dst + "/loot", "owner": "nob",
	}}}}
	id := submit(t, s, shadow, nil)
	if sum := waitJob(t, s, id, 30*time.Second); sum.Status == schemas.JobSuccess {
		t.Fatalf("copying /etc/shadow as nobody succeeded")
	}
	if _, err := os.Stat(filepath.Join(dst, "loot", "shadow")); !os.IsNotExist(err) {
		t.Fatalf("/etc/shadow reached the destination (%v)", err)
	}
	// the source host's upload result says why, per file
	kv, err := s.JS.KeyValue(t.Context(), schemas.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	var seg schemas.ResultSegmentValue
	if e, err := kv.Get(t.Context(), schemas.KeyResultSegmentOf(id, 0, schemas.PhaseUpload, 0)); err != nil {
		t.Fatalf("upload result: %v", err)
	} else if err := json.Unmarshal(e.Value(), &seg); err != nil {
		t.Fatal(err)
	}
	res, _ := seg.Find(0)
	if res.Status != schemas.HostFailed || !strings.Contains(res.Error, "/etc/shadow: read as nobody: open /etc/shadow: permission denied") {
		t.Errorf("upload result %s %q, want failed reading /etc/shadow as nobody", res.Status, res.Error)
	}

	srcDir := openDir(t, 0o755)
	src := filepath.Join(srcDir, "app.conf")
	if err := os.WriteFile(src, []byte("port=80\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ship := map[string]any{"name": "ship", "targets": []string{"127.0.0.72"}, "steps": []any{map[string]any{"file": map[string]any{
		"sources":     []any{map[string]any{"hosts": []string{"127.0.0.72"}, "paths": []string{src}, "account": "nob"}},
		"destination": dst + "/conf/app", "owner": "nob",
	}}}}
	id = submit(t, s, ship, nil)
	if sum := waitJob(t, s, id, 30*time.Second); sum.Status != schemas.JobSuccess {
		t.Fatalf("ship as nobody: %s %+v", sum.Status, hosts(t, s, id))
	}
	for _, p := range []string{dst + "/conf", dst + "/conf/app", dst + "/conf/app/app.conf"} {
		if u, g := ownerOf(t, p); u != uid || g != gid {
			t.Errorf("%s is owned by %d:%d, want nobody %d:%d", p, u, g, uid, gid)
		}
	}
	f := storedSpec(t, s, id).Steps[0].File
	if f.Owner != "nobody" || f.OwnerAlias != "nob" || f.Sources[0].Account != "nobody" || f.Sources[0].AccountAlias != "nob" {
		t.Errorf("stored file step %+v, want OS users with their aliases", f)
	}
}

func bkHeader(s *testenv.System) map[string]string {
	return map[string]string{"X-Bkapi-Authorization": fmt.Sprintf(`{"bk_app_code": "ci", "bk_app_secret": %q, "bk_username": "alice"}`, s.Token),
		"Authorization": ""}
}

func bkAliasScript(scope, alias, content, ip string) map[string]any {
	b := map[string]any{"bk_scope_type": "biz", "bk_scope_id": scope, "script_language": 1,
		"script_content": base64.StdEncoding.EncodeToString([]byte(content)),
		"target_server":  map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": ip}}}}
	if alias != "" {
		b["account_alias"] = alias
	} else {
		b["account_id"] = 1000
	}
	return b
}

// bkCall posts to a BlueKing API and returns the HTTP status and envelope.
func bkCall(t *testing.T, s *testenv.System, api string, body any) (int, map[string]any) {
	t.Helper()
	var env map[string]any
	code := s.JSON(t, "POST", "/api/v3/"+api, body, bkHeader(s), &env)
	return code, env
}

// bkRefused checks BlueKing's answer to bad parameters: HTTP 200, result
// false, 1241007, a message naming field and want.
func bkRefused(t *testing.T, code int, env map[string]any, field, want string) {
	t.Helper()
	msg, _ := env["message"].(string)
	if code != 200 || env["result"] != false || env["code"] != float64(1241007) || !strings.Contains(msg, field) || !strings.Contains(msg, want) {
		t.Errorf("got %d %v, want 200 with code 1241007 naming %s (%s)", code, env, field, want)
	}
}

// An unknown alias is refused before anything is queued, in each
// surface's envelope: native 400 problem, octans code -1, BlueKing 200
// with 1241007, for script users, file sources and file destinations.
func TestUnknownAliasRefusedOnEverySurface(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{})
	before := s.CommandCount(t)

	code, b := s.Do(t, "POST", "/v1/jobs", map[string]any{"targets": []string{"127.0.0.1"}, "steps": []any{map[string]any{"file": map[string]any{
		"sources": []any{map[string]any{"hosts": []string{"127.0.0.1"}, "paths": []string{"/etc/hosts"}, "account": "ghost"}}, "destination": "/tmp/x", "owner": "ghost2",
	}}}}, nil)
	var p struct {
		Status int
		Errors []schemas.FieldError
	}
	_ = json.Unmarshal(b, &p)
	if code != 400 || len(p.Errors) != 2 || p.Errors[0].Field != "steps[0].file.owner" || p.Errors[1].Field != "steps[0].file.sources[0].account" {
		t.Errorf("native file step with unknown aliases: %d %s", code, b)
	}

	var oct struct {
		Code    int
		Message string
	}
	code = s.JSON(t, "POST", "/api/run", map[string]any{"nodes": []string{"127.0.0.1"}, "user": "ghost", "name": "o1", "tasks": "echo hi"}, nil, &oct)
	if code != 200 || oct.Code != -1 || !strings.Contains(oct.Message, "user: unknown account alias \"ghost\"") {
		t.Errorf("octans unknown user: %d %+v", code, oct)
	}

	code, env := bkCall(t, s, "fast_execute_script", bkAliasScript("2", "ghost", "echo hi", "127.0.0.1"))
	bkRefused(t, code, env, "account_alias", "ghost")
	code, env = bkCall(t, s, "fast_transfer_file", map[string]any{"bk_scope_type": "biz", "bk_scope_id": "2", "account_alias": "root",
		"file_target_path": "/tmp/x", "target_server": map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.1"}}},
		"file_source_list": []any{map[string]any{"file_list": []string{"/etc/hosts"}, "account": map[string]any{"alias": "ghost"},
			"server": map[string]any{"ip_list": []any{map[string]any{"bk_cloud_id": 0, "ip": "127.0.0.1"}}}}}})
	bkRefused(t, code, env, "file_source_list[0].account.alias", "ghost")

	if after := s.CommandCount(t); after != before {
		t.Fatalf("refused jobs queued %d commands", after-before)
	}
}

// Aliases belong to their scope: biz:3's alias is unknown in biz:2; a
// scope may deny a global alias (root), which then refuses jobs that name
// it and jobs that name no alias; the admin routes manage them.
func TestAliasesArePerScope(t *testing.T) {
	t.Parallel()
	uid, _ := needRootAndNobody(t)
	s := testenv.Start(t, testenv.Options{Workers: 1})
	s.StartAgentScoped(t, "ac3", "127.0.0.73", "biz:3")
	putAccount(t, s, "biz:3", "app", map[string]any{"os_user": "nobody"})
	putAccount(t, s, "biz:2", "root", map[string]any{"deny": true})
	before := s.CommandCount(t)

	code, env := bkCall(t, s, "fast_execute_script", bkAliasScript("2", "app", "id -u", "127.0.0.73"))
	bkRefused(t, code, env, "account_alias", `unknown account alias "app" in scope biz:2`)
	code, env = bkCall(t, s, "fast_execute_script", bkAliasScript("2", "root", "id -u", "127.0.0.73"))
	bkRefused(t, code, env, "account_alias", `"root" is forbidden in scope biz:2`)
	code, env = bkCall(t, s, "fast_execute_script", bkAliasScript("2", "", "id -u", "127.0.0.73")) // account_id only, held by no alias
	bkRefused(t, code, env, "account_id", "account_id 1000 names no account in scope biz:2")
	putAccount(t, s, "global", "root", map[string]any{"os_user": "root", "bk_account_id": 1000})
	code, env = bkCall(t, s, "fast_execute_script", bkAliasScript("2", "", "id -u", "127.0.0.73")) // now the global root, which biz:2 denies
	bkRefused(t, code, env, "account_alias", `"root" is forbidden in scope biz:2`)
	if code, b := s.Do(t, "PUT", "/v1/accounts/global/other", map[string]any{"os_user": "root", "bk_account_id": 1000}, nil); code != 400 || !strings.Contains(string(b), "already holds BlueKing account id 1000") {
		t.Fatalf("a second alias with id 1000: %d %s", code, b)
	}
	if after := s.CommandCount(t); after != before {
		t.Fatalf("refused jobs queued %d commands", after-before)
	}

	// biz:3's app holds account_id 1000 in biz:3: the scope's set wins
	// over the global root holding the same id
	putAccount(t, s, "biz:3", "app", map[string]any{"os_user": "nobody", "bk_account_id": 1000})
	code, env = bkCall(t, s, "fast_execute_script", bkAliasScript("3", "", "id -u", "127.0.0.73"))
	if code != 200 || env["result"] != true {
		t.Fatalf("biz:3 with its own alias's account_id: %d %v", code, env)
	}
	id := int64(env["data"].(map[string]any)["job_instance_id"].(float64))
	if sum := waitJob(t, s, id, 30*time.Second); sum.Status != schemas.JobSuccess {
		t.Fatalf("job %s", sum.Status)
	}
	if lines := readLog(t, s, id, "127.0.0.73", 0, 10).Lines; len(lines) != 1 || lines[0] != fmt.Sprint(uid) {
		t.Fatalf("biz:3's app ran as %q, want uid %d", lines, uid)
	}

	var list struct{ Items []schemas.Account }
	if code := s.JSON(t, "GET", "/v1/accounts?scope=biz:3", nil, nil, &list); code != 200 || len(list.Items) != 1 || list.Items[0].OSUser != "nobody" {
		t.Fatalf("list biz:3: %d %+v", code, list)
	}
	if code := s.JSON(t, "GET", "/v1/accounts", nil, nil, &list); code != 200 || len(list.Items) != 3 {
		t.Fatalf("list all (global root, biz:2 deny, biz:3 app): %d %+v", code, list)
	}
	if code, b := s.Do(t, "GET", "/v1/accounts", nil, map[string]string{"Authorization": ""}); code != 401 {
		t.Fatalf("list without credentials: %d %s", code, b)
	}
	if code, b := s.Do(t, "PUT", "/v1/accounts/biz:3/x", map[string]any{"os_user": "Not A User"}, nil); code != 400 || !strings.Contains(string(b), "os_user") {
		t.Fatalf("bad os_user: %d %s", code, b)
	}
	if code, b := s.Do(t, "PUT", "/v1/accounts/biz:x.y/x", map[string]any{"os_user": "app"}, nil); code != 400 || !strings.Contains(string(b), "scope") {
		t.Fatalf("bad scope: %d %s", code, b)
	}
	if code, _ := s.Do(t, "DELETE", "/v1/accounts/biz:3/app", nil, nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if code, _ := s.Do(t, "DELETE", "/v1/accounts/biz:3/app", nil, nil); code != 404 {
		t.Fatalf("delete again: %d", code)
	}
	code, env = bkCall(t, s, "fast_execute_script", bkAliasScript("3", "app", "id -u", "127.0.0.73"))
	bkRefused(t, code, env, "account_alias", "unknown account alias")
}

// Under serve (the all-in-one of make run, its data directory 0700, the
// agent root), `fleetjob account set` maps an alias to nobody and a script
// run as it really runs as nobody, as does a file step writing as it.
func TestServeRunsAsNobody(t *testing.T) {
	t.Parallel()
	uid, _ := needRootAndNobody(t)
	dir := filepath.Join(t.TempDir(), "data") // serve makes it 0700
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	natsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	env := []string{"FLEETJOB_TOKEN=acct", "FLEETJOB_LOG_LEVEL=warn", "REDIS_URL="}
	startProc(t, "", env, "serve", "--data-dir", dir, "--http-addr", httpAddr, "--nats-addr", natsAddr, "--agent-id", "solo")
	s := &testenv.System{APIURL: "http://" + httpAddr, Token: "acct"}
	s.WaitReady(t, 30*time.Second)
	s.WaitAgent(t, "solo")

	set := exec.Command(binPath, "account", "set", "global", "nob", "nobody", "--api", s.APIURL, "--token", "acct")
	if out, err := set.CombinedOutput(); err != nil {
		t.Fatalf("fleetjob account set: %v\n%s", err, out)
	}
	dst := openDir(t, 0o777)
	body := map[string]any{"name": "as nobody", "targets": []string{"127.0.0.1"}, "steps": []any{
		map[string]any{"script": map[string]any{"content": "id -u; echo hi > " + dst + "/made-by-script", "user": "nob"}},
		map[string]any{"file": map[string]any{"destination": dst + "/copied", "owner": "nob",
			"sources": []any{map[string]any{"hosts": []string{"127.0.0.1"}, "paths": []string{dst + "/made-by-script"}, "account": "nob"}}}},
	}}
	id := submit(t, s, body, nil)
	if sum := waitJob(t, s, id, 30*time.Second); sum.Status != schemas.JobSuccess {
		t.Fatalf("job %s: %+v", sum.Status, hosts(t, s, id))
	}
	if lines := readLogStep(t, s, id, "127.0.0.1", 0); len(lines) != 1 || lines[0] != fmt.Sprint(uid) {
		t.Fatalf("script output %q, want uid %d", lines, uid)
	}
	for _, p := range []string{dst + "/made-by-script", dst + "/copied", dst + "/copied/made-by-script"} {
		if u, _ := ownerOf(t, p); u != uid {
			t.Errorf("%s is owned by %d, want nobody", p, u)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the data directory is %v (%v), want it to stay 0700", fi.Mode(), err)
	}
}
