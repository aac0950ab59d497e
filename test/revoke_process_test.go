package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/agentkeys"
	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/internal/testenv"
)

// exitRevoked is the status of an agent process whose credentials NATS
// refuses (cmd/fleetjob).
const exitRevoked = 77

// logHas reports whether the process's output holds s.
func (p *proc) logHas(s string) bool {
	b, _ := os.ReadFile(p.log)
	return strings.Contains(string(b), s)
}

// exitStatus waits up to timeout for the process to end and returns its
// exit status.
func (p *proc) exitStatus(t *testing.T, timeout time.Duration, what string) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s: still running after %s", what, timeout)
	}
	return p.cmd.ProcessState.ExitCode() // set before done closed
}

// An agent process rides out a restart of its NATS server, and exits with
// its own status (77) within seconds of being revoked, its last line
// saying to enrol again; started again, it exits at once the same way.
func TestRevokedAgentProcessExits(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	auth, err := natsauth.LoadOrCreate(filepath.Join(dir, "nats-auth"))
	if err != nil {
		t.Fatal(err)
	}
	snippet, err := auth.ServerConfig(filepath.Join(dir, "accounts"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "auth.conf"), []byte(snippet), 0o600); err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	conf := filepath.Join(dir, "n.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("include \"auth.conf\"\nlisten: 127.0.0.1:%d\nmax_payload: 8MB\njetstream { store_dir: %q }\n",
		port, filepath.Join(dir, "store"))), 0o644); err != nil {
		t.Fatal(err)
	}
	server := startProc(t, "", nil, "nats-server", "-c", conf)
	connect := func(role natsauth.Role) *nats.Conn {
		t.Helper()
		cr, err := auth.ServiceCreds(role, "test-"+string(role))
		if err != nil {
			t.Fatal(err)
		}
		var nc *nats.Conn
		testenv.Eventually(t, 15*time.Second, func() bool {
			nc, err = nats.Connect(url, cr.Option(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
			return err == nil
		}, "nats at %s", url)
		t.Cleanup(nc.Close)
		return nc
	}
	js, err := jetstream.New(connect(natsauth.RoleAdmin))
	if err != nil {
		t.Fatal(err)
	}
	agentDir := t.TempDir()
	creds := (&testenv.NATSServer{URL: url, Auth: auth}).AgentCredsFile(t, js, "pr1", agentDir)
	env := []string{"NATS_URL=" + url, "FLEETJOB_LOG_LEVEL=info"}
	args := []string{"agent", "--id", "pr1", "--ip", "127.0.9.41", "--data-dir", agentDir, "--nats-creds", creds}
	a := startProc(t, "", env, args...)
	testenv.Eventually(t, 20*time.Second, func() bool { return a.logHas("agent online") }, "the agent online")

	// a restart of the server is an interruption, not a refusal
	server.kill()
	testenv.Eventually(t, 10*time.Second, func() bool { return a.logHas("nats disconnected") }, "the agent to see the server gone")
	server = startProc(t, "", nil, "nats-server", "-c", conf)
	testenv.Eventually(t, 30*time.Second, func() bool { return a.logHas("nats reconnected") }, "the agent to reconnect after the restart")
	select {
	case <-a.done:
		b, _ := os.ReadFile(a.log)
		t.Fatalf("the agent exited on a server restart:\n%s", b)
	default:
	}

	sys := connect(natsauth.RoleSystem)
	auth.UsePushConnection(sys)
	keys, err := agentkeys.LoadOrCreate(agentDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := auth.Revoke(ctx, keys.UserPublic()); err != nil {
		t.Fatal(err)
	}
	if code := a.exitStatus(t, 10*time.Second, "the revoked agent"); code != exitRevoked {
		t.Errorf("the revoked agent exited %d, want %d", code, exitRevoked)
	}
	if !a.logHas("this agent's credentials were revoked: re-enrol with fleetjob agent --enrol") {
		b, _ := os.ReadFile(a.log)
		t.Errorf("the revoked agent did not say why it stopped:\n%s", b)
	}
	if b, _ := os.ReadFile(a.log); testing.Verbose() {
		t.Logf("the agent's output:\n%s", b)
	}
	again := startProc(t, "", env, args...)
	if code := again.exitStatus(t, 15*time.Second, "the revoked agent started again"); code != exitRevoked {
		b, _ := os.ReadFile(again.log)
		t.Errorf("the revoked agent started again exited %d, want %d:\n%s", code, exitRevoked, b)
	}
}

// Under serve the built-in agent runs in process: revoking it stops that
// agent, says so, and leaves the API serving.
func TestServeSurvivesItsAgentRevoked(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	natsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	env := []string{"FLEETJOB_TOKEN=rvk", "FLEETJOB_LOG_LEVEL=info", "REDIS_URL="}
	p := startProc(t, "", env, "serve", "--data-dir", dir, "--http-addr", httpAddr, "--nats-addr", natsAddr, "--agent-id", "solo")
	s := &testenv.System{APIURL: "http://" + httpAddr, Token: "rvk"}
	s.WaitReady(t, 30*time.Second)
	s.WaitAgent(t, "solo")
	if code, b := s.Do(t, "POST", "/v1/agents/solo/revoke", nil, nil); code != 200 {
		t.Fatalf("revoke solo: %d %s", code, b)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return p.logHas("the built-in agent was revoked and has stopped") },
		"serve to say its agent stopped")
	select {
	case <-p.done:
		b, _ := os.ReadFile(p.log)
		t.Fatalf("serve exited when its agent was revoked:\n%s", b)
	default:
	}
	if code, b := s.Do(t, "GET", "/v1/jobs", nil, nil); code != 200 {
		t.Errorf("the API after the agent's revocation: %d %s", code, b)
	}
}
