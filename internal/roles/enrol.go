package roles

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/api"
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
