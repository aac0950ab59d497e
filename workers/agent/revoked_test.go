package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/internal/agentkeys"
	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/agent"
)

// A revoked agent notices: NATS cuts its connection and refuses it again,
// Run kills the script it was running and returns ErrRevoked within a few
// seconds, instead of retrying forever.
func TestRevokedAgentStops(t *testing.T) {
	n := testenv.NATS(t)
	admin := n.Connect(t, natsauth.RoleAdmin)
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	creds := n.AgentCredsFile(t, js, "rv1", dir)
	nc, err := nats.Connect(n.URL, nats.UserCredentials(creds), nats.CustomInboxPrefix(natsauth.AgentInboxPrefix("rv1")),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ajs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{ID: "rv1", IP: "127.0.0.1", DataDir: dir, Slots: 2, Topology: schemas.DefaultTopology()},
		nc, ajs, agent.NewMetrics(prometheus.NewRegistry()), testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := testenv.Go(func() error { return a.Run(ctx) })

	pidFile := filepath.Join(t.TempDir(), "pid")
	task := schemas.Task{V: 1, ExecID: schemas.ExecID(1, 0, 0, 1), JobID: 1, Attempt: 1,
		Target: schemas.Host{IP: "127.0.0.1"}, Kind: schemas.StepScript, Timeout: 120, NotAfter: time.Now().Add(time.Minute),
		Script: &schemas.Script{Content: fmt.Sprintf("echo $$ > %s; sleep 120", pidFile), Interpreter: "bash"}}
	b, _ := json.Marshal(task)
	if _, err := js.Publish(t.Context(), schemas.TaskSubject(schemas.DefaultPool, "rv1", 1), b); err != nil {
		t.Fatal(err)
	}
	var pid int
	testenv.Eventually(t, 20*time.Second, func() bool {
		b, err := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	}, "the script to start")

	keys, err := agentkeys.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer rcancel()
	if err := n.Auth.Revoke(rctx, keys.UserPublic()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, agent.ErrRevoked) {
			t.Fatalf("Run returned %v, want ErrRevoked", err)
		}
		t.Logf("Run returned: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatalf("the revoked agent still runs (connection %v, last error %v)", nc.Status(), nc.LastError())
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the revoked agent's script (pid %d) still runs: %v", pid, err)
	}
}

// AuthRefused tells the servers' auth refusals from other errors, however
// nats.go carries them.
func TestAuthRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"authorization violation", nats.ErrAuthorization, true},
		{"revoked", nats.ErrAuthRevoked, true},
		{"expired", nats.ErrAuthExpired, true},
		{"account expired", nats.ErrAccountAuthExpired, true},
		{"server text, wrapped", fmt.Errorf("connect nats: %w", errors.New("nats: user authentication revoked")), true},
		{"connection refused", errors.New("dial tcp 127.0.0.1:4222: connect: connection refused"), false},
		{"no servers", nats.ErrNoServers, false},
		{"permission violation", nats.ErrPermissionViolation, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := agent.AuthRefused(tc.err); got != tc.want {
				t.Errorf("AuthRefused(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
