package roles

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/internal/agentkeys"
	"github.com/fleetjob/fleetjob/internal/natsauth"
	"github.com/fleetjob/fleetjob/schemas"
)

// noCredentials is the api.AgentIssuer of a NATS without authentication:
// it issues no JWT (api.ErrNoNATSCredentials) and revokes nothing at the
// server, but prepares each agent's task consumer for real. The NATS
// authority replaces it where NATS runs with credentials.
type noCredentials struct {
	js  jetstream.JetStream
	top schemas.Topology
}

func (noCredentials) AgentJWT(string, string) (string, error) { return "", api.ErrNoNATSCredentials }

func (noCredentials) SimulatorJWT(string, string) (string, error) {
	return "", api.ErrNoNATSCredentials
}

func (noCredentials) Revoke(context.Context, string) error { return api.ErrNoNATSCredentials }

func (n noCredentials) PrepareAgent(ctx context.Context, agentID string, slots int) error {
	if _, err := n.js.CreateOrUpdateConsumer(ctx, schemas.StreamTasks, n.top.AgentConsumerConfig(agentID, slots)); err != nil {
		return fmt.Errorf("task consumer of %s: %w", agentID, err)
	}
	return nil
}

// Enroller returns the API's enroller over this plumbing: issuer signs
// agents' credentials (nil: NATS without credentials) and natsURLs are
// what enrolled agents are told to join.
func (p Plumbing) Enroller(ctx context.Context, issuer api.AgentIssuer, natsURLs []string) (*api.Enroller, error) {
	tokens, err := p.JS.KeyValue(ctx, schemas.BucketEnrolments)
	if err != nil {
		return nil, fmt.Errorf("enrolment tokens bucket: %w", err)
	}
	enrolled, err := p.JS.KeyValue(ctx, schemas.BucketEnrolled)
	if err != nil {
		return nil, fmt.Errorf("enrolled bucket: %w", err)
	}
	if issuer == nil {
		issuer = noCredentials{js: p.JS, top: p.Top}
	}
	return &api.Enroller{Tokens: tokens, Enrolled: enrolled, Issuer: issuer, NATSURLs: natsURLs, Log: p.Log.With("component", "enrol")}, nil
}

// LocalAgent is the agent an all-in-one server (serve) runs for its own
// machine.
type LocalAgent struct {
	ID       string
	Host     schemas.Host
	HostID   int64 // its CMDB host id, 0 for none
	Hostname string
	DataDir  string
	Slots    int
}

// EnrolLocal enrols serve's own agent the way any agent is enrolled (a
// one-use token made and used in process, keys made in its data dir),
// so `make run` needs no enrolment step. Later starts find it enrolled:
// they refresh its credentials and consumer, and allow its host if the
// host changed. A revoked local agent, or its id enrolled with other
// keys, is an error that says what to do.
func (p Plumbing) EnrolLocal(ctx context.Context, issuer api.AgentIssuer, natsURLs []string, a LocalAgent) error {
	en, err := p.Enroller(ctx, issuer, natsURLs)
	if err != nil {
		return err
	}
	keys, err := agentkeys.LoadOrCreate(a.DataDir)
	if err != nil {
		return err
	}
	now := time.Now()
	rec, err := en.Enrolment(ctx, a.ID)
	switch {
	case errors.Is(err, schemas.ErrNotFound):
		req := api.TokenRequest{Agent: a.ID, Hosts: []schemas.Host{a.Host}, TTL: "1m"}
		if a.HostID != 0 {
			req.HostIDs = []int64{a.HostID}
		}
		tok, err := en.CreateToken(ctx, req, "serve", now)
		if err != nil {
			return fmt.Errorf("enrol the local agent: %w", err)
		}
		g, err := en.Check(ctx, tok.Token, now)
		if err != nil {
			return fmt.Errorf("enrol the local agent: %w", err)
		}
		resp, err := en.Enrol(ctx, g, api.EnrolRequest{Agent: a.ID, Hostname: a.Hostname, NKey: keys.UserPublic(),
			XKey: keys.CurvePublic(), Slots: a.Slots}, now)
		if err != nil {
			return fmt.Errorf("enrol the local agent: %w", err)
		}
		if resp.JWT != "" {
			return agentkeys.WriteCreds(a.DataDir, resp.JWT, keys)
		}
		return nil
	case err != nil:
		return fmt.Errorf("local agent enrolment: %w", err)
	case rec.Revoked != nil:
		return fmt.Errorf("the local agent %s was revoked on %s: start with another --agent-id, or --no-agent", a.ID, rec.Revoked.Format(time.RFC3339))
	case rec.NKey != keys.UserPublic():
		return fmt.Errorf("agent id %s is enrolled with other keys than those in %s: revoke it (fleetjob agent revoke %s) or choose another --agent-id", a.ID, a.DataDir, a.ID)
	}
	if err := en.Allow(ctx, a.ID, a.Host, a.HostID); err != nil {
		return err
	}
	if err := en.Issuer.PrepareAgent(ctx, a.ID, a.Slots); err != nil {
		return fmt.Errorf("local agent consumer: %w", err)
	}
	jwt, err := en.Issuer.AgentJWT(a.ID, keys.UserPublic())
	if errors.Is(err, api.ErrNoNATSCredentials) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("local agent credentials: %w", err)
	}
	return agentkeys.WriteCreds(a.DataDir, jwt, keys)
}

// AuthorityIssuer is the api.AgentIssuer of a NATS with authentication:
// it signs agents' user JWTs with the NATS authority's account key,
// revokes them there (pushed to every server) and prepares each agent's
// task consumer over js.
type AuthorityIssuer struct {
	Auth *natsauth.Authority
	JS   jetstream.JetStream
	Top  schemas.Topology
}

// AgentJWT implements api.AgentIssuer.
func (a AuthorityIssuer) AgentJWT(id, pub string) (string, error) { return a.Auth.AgentJWT(id, pub) }

// SimulatorJWT implements api.AgentIssuer.
func (a AuthorityIssuer) SimulatorJWT(pool, pub string) (string, error) {
	return a.Auth.SimulatorJWT(pool, pub)
}

// Revoke implements api.AgentIssuer.
func (a AuthorityIssuer) Revoke(ctx context.Context, pub string) error {
	return a.Auth.Revoke(ctx, pub)
}

// PrepareAgent implements api.AgentIssuer.
func (a AuthorityIssuer) PrepareAgent(ctx context.Context, id string, slots int) error {
	return natsauth.PrepareAgent(ctx, a.JS, a.Top, id, slots)
}
