package test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

func sha(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fileLogs reads a host's file-step log: one schemas.FileLog per line.
func fileLogs(t *testing.T, s *testenv.System, id int64, host string, step int) []schemas.FileLog {
	t.Helper()
	var out []schemas.FileLog
	page := readLogStep(t, s, id, host, step)
	for _, l := range page {
		var fl schemas.FileLog
		if err := json.Unmarshal([]byte(l), &fl); err != nil {
			t.Fatalf("file log line %q: %v", l, err)
		}
		out = append(out, fl)
	}
	return out
}

func readLogStep(t *testing.T, s *testenv.System, id int64, host string, step int) []string {
	t.Helper()
	var out struct{ Lines []string }
	if code := s.JSON(t, "GET", fmt.Sprintf("/v1/jobs/%d/hosts/%s/log?step=%d&limit=10000", id, host, step), nil, nil, &out); code != 200 {
		t.Fatalf("log: %d", code)
	}
	return out.Lines
}

func TestScriptFileScript(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 2, Agents: []string{"f1=127.0.0.51", "f2=127.0.0.52", "f3=127.0.0.53"}})
	src, dst := t.TempDir(), t.TempDir()
	targets := []string{"127.0.0.51", "127.0.0.52", "127.0.0.53"}
	body := map[string]any{
		"name": "build, ship, check", "targets": targets,
		"steps": []any{
			map[string]any{"name": "build", "targets": []string{"127.0.0.51"}, "script": map[string]any{"content": fmt.Sprintf(
				"mkdir -p %[1]s/out && seq 1 100000 > %[1]s/out/app.bin && echo v1 > %[1]s/out/VERSION && chmod 0750 %[1]s/out/app.bin", src)}},
			map[string]any{"name": "ship", "file": map[string]any{
				"sources":     []any{map[string]any{"hosts": []string{"127.0.0.51"}, "paths": []string{src + "/out/*"}}},
				"destination": dst + "/all", // every target writes into the same directory on this machine
			}},
			map[string]any{"name": "check", "script": map[string]any{"content": "echo checked"}},
		},
	}
	id := submit(t, s, body, nil)
	sum := waitJob(t, s, id, 30*time.Second)
	if sum.Status != schemas.JobSuccess || len(sum.Steps) != 3 || sum.Steps[1].Status != schemas.JobSuccess {
		t.Fatalf("job %s steps %+v", sum.Status, sum.Steps)
	}
	want := sha(t, src+"/out/app.bin")
	if got := sha(t, dst+"/all/app.bin"); got != want {
		t.Errorf("app.bin: sha %s, want %s", got, want)
	}
	if fi, err := os.Stat(dst + "/all/app.bin"); err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("mode of app.bin: %v %v, want the source's 0750", fi.Mode(), err)
	}
	for _, ip := range targets {
		logs := fileLogs(t, s, id, ip, 1)
		final := map[string]schemas.FileLog{}
		for _, l := range logs {
			final[l.SourcePath] = l
		}
		if len(final) != 2 {
			t.Errorf("%s: file logs for %d files, want 2: %+v", ip, len(final), logs)
		}
		for p, l := range final {
			if l.Mode != schemas.FileModeDownload || l.Status != schemas.FileSuccess || l.DestHost.IP != ip || l.Progress != 100 || !strings.Contains(strings.ToLower(l.Content), "success") {
				t.Errorf("%s %s: %+v", ip, p, l)
			}
		}
	}
	if got := readLogStep(t, s, id, "127.0.0.52", 2); len(got) != 1 || got[0] != "checked" {
		t.Errorf("step 3 log: %q", got)
	}
}

func TestFileTraversalAndMissingSources(t *testing.T) {
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"g1=127.0.0.61", "g2=127.0.0.62"}})
	src, dst := t.TempDir(), t.TempDir()
	outside := t.TempDir()
	os.WriteFile(src+"/evil", []byte("payload"), 0o644)
	// the destination holds a symlink named like the file, pointing outside
	if err := os.Symlink(outside+"/target", dst+"/evil"); err != nil {
		t.Fatal(err)
	}
	file := func(paths []string, dest string, strict bool) map[string]any {
		return map[string]any{"targets": []string{"127.0.0.62"}, "steps": []any{map[string]any{"file": map[string]any{
			"sources": []any{map[string]any{"hosts": []string{"127.0.0.61"}, "paths": paths}}, "destination": dest, "strict": strict}}}}
	}
	id := submit(t, s, file([]string{src + "/evil"}, dst, true), nil)
	if sum := waitJob(t, s, id, 30*time.Second); sum.Status != schemas.JobFailed {
		t.Errorf("write through a symlink leaving the destination: job %s", sum.Status)
	}
	if _, err := os.Stat(outside + "/target"); !os.IsNotExist(err) {
		t.Errorf("a file was written outside the destination: %v", err)
	}
	// a missing source fails a strict step, and nothing is sent
	id = submit(t, s, file([]string{src + "/nope", src + "/evil"}, dst+"/x", true), nil)
	sum := waitJob(t, s, id, 30*time.Second)
	h := hostByIP(t, s, id, "127.0.0.62")
	if sum.Status != schemas.JobFailed || !strings.Contains(h.Error, "file source failed") {
		t.Errorf("missing source: job %s host %+v", sum.Status, h)
	}
	if _, err := os.Stat(dst + "/x/evil"); !os.IsNotExist(err) {
		t.Error("a strict step with a missing source still sent files")
	}
	// not strict: what exists is sent
	id = submit(t, s, file([]string{src + "/nope", "REGEX:" + src + "/e.*l"}, dst+"/y", false), nil)
	if sum := waitJob(t, s, id, 30*time.Second); sum.Status != schemas.JobSuccess {
		t.Errorf("lenient step: %s", sum.Status)
	}
	if b, _ := os.ReadFile(dst + "/y/evil"); string(b) != "payload" {
		t.Errorf("lenient step wrote %q", b)
	}
	// paths that are not absolute, and destinations that are not clean, are refused before anything is queued
	before := s.CommandCount(t)
	for _, bad := range []map[string]any{file([]string{"../etc/passwd"}, dst, true), file([]string{src + "/evil"}, dst+"/../etc", true), file([]string{src + "/evil"}, "relative/dir", true)} {
		if code, b := s.Do(t, "POST", "/v1/jobs", bad, nil); code != 400 {
			t.Errorf("bad file step accepted: %d %s", code, b)
		}
	}
	if s.CommandCount(t) != before {
		t.Error("a bad file step was queued")
	}
}

// vmHWM reads a process's peak resident memory in KiB.
func vmHWM(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// A 200 MB file from one host to three, through agent processes of the
// real binary: checksums equal, and no agent's memory grows with the file.
func TestLargeFileToThreeHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("200 MB transfer")
	}
	t.Parallel()
	s := testenv.Start(t, testenv.Options{Workers: 1})
	env := []string{"NATS_URL=" + s.NATSURL, "FLEETJOB_LOG_LEVEL=warn"}
	ips := []string{"127.0.0.71", "127.0.0.72", "127.0.0.73", "127.0.0.74"}
	procs := map[string]*proc{}
	for i, ip := range ips {
		id, dir := fmt.Sprintf("big%d", i), t.TempDir()
		procs[ip] = startProc(t, "", append(env, "FLEETJOB_NATS_CREDS="+s.AgentCredsFile(t, id, dir)), "agent", "--id", id, "--ip", ip, "--data-dir", dir)
		s.WaitAgent(t, fmt.Sprintf("big%d", i))
	}
	src := filepath.Join(t.TempDir(), "big.bin")
	f, _ := os.Create(src)
	buf := make([]byte, 1<<20)
	for i := range 200 {
		for j := range buf {
			buf[j] = byte(i*31 + j*7)
		}
		f.Write(buf)
	}
	f.Close()
	dst := t.TempDir()
	id := submit(t, s, map[string]any{"targets": ips[1:], "steps": []any{map[string]any{"file": map[string]any{
		"sources": []any{map[string]any{"hosts": []string{ips[0]}, "paths": []string{src}}}, "destination": dst + "/d"}}}}, nil)
	sum := waitJob(t, s, id, 5*time.Minute)
	if sum.Status != schemas.JobSuccess {
		t.Fatalf("job %s %v", sum.Status, sum.Counts)
	}
	want := sha(t, src)
	if got := sha(t, dst+"/d/big.bin"); got != want {
		t.Errorf("checksum %s, want %s", got, want)
	}
	for ip, p := range procs {
		if kb := vmHWM(t, p.cmd.Process.Pid); kb > 120<<10 {
			t.Errorf("agent %s peaked at %d MiB for a 200 MiB file", ip, kb>>10)
		} else {
			t.Logf("agent %s peak RSS %d MiB", ip, kb>>10)
		}
	}
}
