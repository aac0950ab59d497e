package testenv

// This file holds the test system's NATS identities: every role connects
// with credentials of its own, as in production.

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/agentkeys"
	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/internal/roles"
	"github.com/fleetjob/fleetjob/schemas"
)

// NATSServer is an embedded server and the authority it trusts.
type NATSServer struct {
	URL  string
	Auth *natsauth.Authority
}

// Connect connects as a new user of a service role; the connection is
// closed in cleanup.
func (n *NATSServer) Connect(t testing.TB, role natsauth.Role, opts ...nats.Option) *nats.Conn {
	t.Helper()
	c, err := n.Auth.ServiceCreds(role, "test-"+string(role))
	if err != nil {
		t.Fatal(err)
	}
	return n.connect(t, append([]nats.Option{c.Option()}, opts...)...)
}

func (n *NATSServer) connect(t testing.TB, opts ...nats.Option) *nats.Conn {
	t.Helper()
	// a permission violation shows in the test's log: the roles' own
	// calls must never cause one
	report := nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		t.Logf("nats async error: %v", err)
	})
	nc, err := nats.Connect(n.URL, append([]nats.Option{report}, opts...)...)
	if err != nil {
		t.Fatalf("connect to embedded nats: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// CredsFile writes the creds of a new user of role into the test's temp
// dir and returns its path, for processes of the binary
// (FLEETJOB_NATS_CREDS).
func (n *NATSServer) CredsFile(t testing.TB, role natsauth.Role) string {
	t.Helper()
	c, err := n.Auth.ServiceCreds(role, "test-"+string(role))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), string(role)+".creds")
	if err := natsauth.WriteCreds(path, c); err != nil {
		t.Fatal(err)
	}
	return path
}

func newJS(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(schemas.PublishAsyncTimeout))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// rolePlumbing is s.P with a connection of role's own.
func (s *System) rolePlumbing(t testing.TB, role natsauth.Role) roles.Plumbing {
	t.Helper()
	p := s.P
	p.NC = s.NATS.Connect(t, role, nats.MaxReconnects(-1))
	p.JS = newJS(t, p.NC)
	return p
}

// AgentConn connects as agent id, with the user key kept in its data
// directory and a JWT the authority issues for it; its task consumer is
// made first, as enrolment does. The connection is closed in cleanup.
func (s *System) AgentConn(t testing.TB, id string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := natsauth.PrepareAgent(ctx, s.JS, s.P.Top, id, 64); err != nil {
		t.Fatal(err)
	}
	keys, err := agentkeys.LoadOrCreate(s.agentDir(id))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.NATS.Auth.AgentJWT(id, keys.UserPublic())
	if err != nil {
		t.Fatal(err)
	}
	return s.NATS.connect(t, append([]nats.Option{natsauth.AgentOption(id, tok, keys.User), nats.Name("agent " + id)}, opts...)...)
}

// AgentCredsFile writes agent id's creds file (its JWT and its key's seed,
// as an enrolled agent keeps them) for a process of the binary, making
// its task consumer first.
func (s *System) AgentCredsFile(t testing.TB, id, dataDir string) string {
	t.Helper()
	return s.NATS.AgentCredsFile(t, s.JS, id, dataDir)
}

// AgentCredsFile is System.AgentCredsFile on a bare server: it creates
// the topology (with admin's js) first.
func (n *NATSServer) AgentCredsFile(t testing.TB, js jetstream.JetStream, id, dataDir string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	top := schemas.DefaultTopology()
	if err := top.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	if err := natsauth.PrepareAgent(ctx, js, top, id, 64); err != nil {
		t.Fatal(err)
	}
	keys, err := agentkeys.LoadOrCreate(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := n.Auth.AgentJWT(id, keys.UserPublic())
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := keys.User.Seed()
	path := filepath.Join(t.TempDir(), "agent-"+id+".creds")
	if err := natsauth.WriteCreds(path, natsauth.Creds{JWT: tok, Seed: seed}); err != nil {
		t.Fatal(err)
	}
	return path
}
