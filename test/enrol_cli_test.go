package test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/fleetjob/fleetjob/internal/agentkeys"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

// runCLI runs a short fleetjob command and returns its stdout, stderr and
// whether it succeeded.
func runCLI(t *testing.T, env []string, args ...string) (string, string, bool) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return strings.TrimSpace(out.String()), errb.String(), err == nil
}

// The real binary: an admin makes a token with `enrolment create`, an
// agent process enrols with `agent --enrol` (its keys made and kept 0600
// in its data dir, only the public halves sent), comes online and runs
// work; restarted it uses what it stored; `agent revoke` ends its work.
func TestAgentEnrolsWithTheBinary(t *testing.T) {
	s := testenv.Start(t, testenv.Options{Workers: 1})
	admin := []string{"--api", s.APIURL}
	if _, errs, ok := runCLI(t, nil, append([]string{"enrolment", "create", "--host", "127.0.9.21", "--token", "wrong"}, admin...)...); ok || !strings.Contains(errs, "401") {
		t.Fatalf("enrolment create with a wrong admin token: ok=%v %s", ok, errs)
	}
	tok, errs, ok := runCLI(t, []string{"FLEETJOB_TOKEN=" + s.Token}, append([]string{"enrolment", "create", "--host", "0:127.0.9.21",
		"--scope", "biz:7", "--label", "role=web", "--ttl", "5m", "--agent-id", "cli1"}, admin...)...)
	if !ok || !strings.HasPrefix(tok, "fje_") {
		t.Fatalf("enrolment create: %q %s", tok, errs)
	}

	dir := t.TempDir()
	env := []string{"NATS_URL=" + s.NATSURL, "FLEETJOB_LOG_LEVEL=info"}
	args := []string{"agent", "--id", "cli1", "--ip", "127.0.9.21", "--data-dir", dir, "--enrol", s.APIURL, "--token", tok}
	a := startProc(t, "", env, args...)
	s.WaitAgent(t, "cli1")

	for _, f := range []string{filepath.Join(agentkeys.Dir, "user.nk"), filepath.Join(agentkeys.Dir, "curve.xk"), "enrolled.json",
		filepath.Join(agentkeys.Dir, agentkeys.CredsFile)} {
		st, err := os.Stat(filepath.Join(dir, f))
		if os.IsNotExist(err) && strings.HasSuffix(f, agentkeys.CredsFile) {
			continue // NATS without credentials issues none
		}
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want 0600", f, st.Mode().Perm(), err)
		}
	}
	seed, _ := os.ReadFile(filepath.Join(dir, agentkeys.Dir, "user.nk"))
	kp, err := nkeys.FromSeed(bytes.TrimSpace(seed))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	var rec schemas.Enrolment
	if code := s.JSON(t, "GET", "/v1/agents/cli1/enrolment", nil, nil, &rec); code != 200 || rec.NKey != pub || rec.Scope.String() != "biz:7" || rec.Labels["role"] != "web" {
		t.Fatalf("enrolment: %d %+v (the agent's key is %s)", code, rec, pub)
	}
	runs := newLedger(t)
	id := submit(t, s, script(runs.append("ran"), "127.0.9.21"), nil)
	if sum := waitJob(t, s, id, 20*time.Second); sum.Status != schemas.JobSuccess {
		t.Fatalf("job on the enrolled agent: %s", sum.Status)
	}

	// restarted with the same flags it does not enrol again (the token is used up)
	a.signal(syscall.SIGTERM)
	<-a.done
	a = startProc(t, "", env, args...)
	testenv.Eventually(t, 15*time.Second, func() bool {
		b, _ := os.ReadFile(a.log)
		return strings.Contains(string(b), "already enrolled")
	}, "the restarted agent to use its stored enrolment")
	s.WaitAgent(t, "cli1")
	// the used token enrols nobody
	if _, errs, ok := runCLI(t, env, "agent", "--id", "cli2", "--ip", "127.0.9.22", "--data-dir", t.TempDir(), "--enrol", s.APIURL,
		"--token", tok, "--enrol-only"); ok || !strings.Contains(errs, "401") {
		t.Fatalf("a used token: ok=%v %s", ok, errs)
	}

	// a load simulator's pool enrols once for its range
	simTok, errs, ok := runCLI(t, []string{"FLEETJOB_TOKEN=" + s.Token}, append([]string{"enrolment", "create", "--simulator",
		"--agent-id", "clis", "--range", "0:10.77.0.1-10.77.0.3"}, admin...)...)
	if !ok {
		t.Fatalf("simulator enrolment token: %s", errs)
	}
	startProc(t, "", env, "agent", "--simulate", "3", "--sim-pool", "clis", "--sim-first-ip", "10.77.0.1", "--data-dir", t.TempDir(),
		"--enrol", s.APIURL, "--token", simTok)
	s.WaitAgent(t, "clis-2")

	out, errs, ok := runCLI(t, []string{"FLEETJOB_TOKEN=" + s.Token}, append([]string{"agent", "revoke", "cli1"}, admin...)...)
	if !ok || !strings.Contains(out, "revoked") {
		t.Fatalf("agent revoke: %q %s", out, errs)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return !agentListed(t, s, "cli1") }, "cli1 gone once revoked")

	// the revoked process exits 77 and says what to do; done, it serves again
	if code := a.exitStatus(t, 10*time.Second, "the revoked agent"); code != exitRevoked {
		t.Fatalf("the revoked agent exited %d, want %d", code, exitRevoked)
	}
	b, _ := os.ReadFile(a.log)
	hint := "re-enrol with fleetjob agent --enrol <api-url> --token <token from fleetjob enrolment create>, after moving " +
		filepath.Join(dir, "enrolled.json") + " and " + filepath.Join(dir, agentkeys.Dir) + " away"
	if !strings.Contains(string(b), hint) {
		t.Fatalf("the revoked agent's last words do not say %q:\n%s", hint, b)
	}
	for _, f := range []string{"enrolled.json", agentkeys.Dir} {
		if err := os.Rename(filepath.Join(dir, f), filepath.Join(dir, f+".revoked")); err != nil {
			t.Fatal(err)
		}
	}
	tok, errs, ok = runCLI(t, []string{"FLEETJOB_TOKEN=" + s.Token}, append([]string{"enrolment", "create", "--host", "0:127.0.9.21",
		"--scope", "biz:7", "--agent-id", "cli1"}, admin...)...)
	if !ok {
		t.Fatalf("enrolment create after the revocation: %s", errs)
	}
	args[len(args)-1] = tok
	startProc(t, "", env, args...)
	s.WaitAgent(t, "cli1")
}
