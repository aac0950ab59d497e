package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/fleetjob/fleetjob/schemas"
)

// AgentIssuer is the NATS side of enrolment: it issues an enrolled
// agent's user JWT, revokes it, and prepares what the agent may not
// create itself (its task consumer).
type AgentIssuer interface {
	// AgentJWT signs a user JWT for agentID's public user nkey. An issuer
	// without NATS credentials answers ErrNoNATSCredentials.
	AgentJWT(agentID, userPub string) (string, error)
	// SimulatorJWT signs a user JWT for a load simulator serving pool:
	// the rights of every agent of its pool.
	SimulatorJWT(pool, userPub string) (string, error)
	// Revoke revokes the user key: its connection is cut and it cannot
	// connect again.
	Revoke(ctx context.Context, userPub string) error
	// PrepareAgent creates the agent's task consumer with slots in flight.
	PrepareAgent(ctx context.Context, agentID string, slots int) error
}

// ErrNoNATSCredentials is what an AgentIssuer answers when NATS runs
// without authentication: the agent is enrolled and told it has no
// credentials to store.
var ErrNoNATSCredentials = errors.New("NATS credentials not configured: the agent connects without credentials")

// Enrolment token limits.
const (
	DefaultEnrolTTL = time.Hour
	MaxEnrolTTL     = schemas.MaxEnrolTTL
	// enrolTokenPrefix marks fleetjob enrolment tokens, for secret scanners.
	enrolTokenPrefix = "fje_"
)

// Enroller makes enrolment tokens, enrols agents with them and revokes
// agents. Tokens are random, shown once and kept only as their SHA-256 in
// the enrolment tokens bucket; using one deletes it compare-and-set on its
// revision, so of two uses, even at once, one fails.
type Enroller struct {
	Tokens   jetstream.KeyValue // schemas.BucketEnrolments
	Enrolled jetstream.KeyValue // schemas.BucketEnrolled
	Issuer   AgentIssuer
	// NATSURLs are the URLs an enrolled agent is told to connect to.
	NATSURLs []string
	Log      *slog.Logger
}

// TokenRequest is what an admin allows the agent that will use a token.
type TokenRequest struct {
	Agent  string            `json:"agent,omitempty"`
	Scope  string            `json:"scope,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	Hosts  []schemas.Host    `json:"hosts"`
	// HostIDs are the CMDB host ids (BlueKing bk_host_id) it may claim.
	HostIDs   []int64             `json:"host_ids,omitempty"`
	Ranges    []schemas.HostRange `json:"ranges,omitempty"`
	Simulator bool                `json:"simulator,omitempty"`
	// TTL is how long the token may be used, in Go duration syntax
	// ("1h"); empty is DefaultEnrolTTL.
	TTL string `json:"ttl,omitempty"`
}

// TokenResponse answers a new token: the token is shown here only.
type TokenResponse struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
	schemas.EnrolmentGrant
}

// EnrolRequest is what an agent sends with its enrolment token: its id
// and its public keys, never a private one.
type EnrolRequest struct {
	Agent    string `json:"agent"`
	Hostname string `json:"hostname,omitempty"`
	NKey     string `json:"nkey"`
	XKey     string `json:"xkey"`
	// Slots is how many tasks its consumer hands it at once (default 64).
	Slots int `json:"slots,omitempty"`
}

// EnrolResponse is what an enrolled agent gets: its user JWT (empty when
// NATS runs without credentials) and where to connect.
type EnrolResponse struct {
	Agent    string            `json:"agent"`
	JWT      string            `json:"jwt,omitempty"`
	NATSURLs []string          `json:"nats_urls"`
	Scope    string            `json:"scope,omitempty"`
	Hosts    []schemas.Host    `json:"hosts"`
	Labels   map[string]string `json:"labels,omitempty"`
	Note     string            `json:"note,omitempty"`
}

// ErrBadEnrolToken is every refusal of an enrolment token: unknown, used,
// expired or missing look the same to the caller (401).
var ErrBadEnrolToken = fmt.Errorf("the enrolment token is unknown, used or expired: %w", ErrUnauthorized)

// CreateToken validates req and stores a new one-use token for it.
func (en *Enroller) CreateToken(ctx context.Context, req TokenRequest, by string, now time.Time) (TokenResponse, error) {
	g, err := req.grant(now)
	if err != nil {
		return TokenResponse{}, err
	}
	g.By = by
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return TokenResponse{}, fmt.Errorf("enrolment token: %w", err)
	}
	tok := enrolTokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	b, _ := json.Marshal(g)
	if _, err := en.Tokens.Create(ctx, tokenKey(tok), b); err != nil {
		return TokenResponse{}, schemas.Unavailable(err, "store the enrolment token")
	}
	en.Log.Info("enrolment token created", "by", by, "agent", g.Agent, "scope", g.Scope.String(), "hosts", len(g.Hosts), "expires", g.Expires)
	return TokenResponse{Token: tok, Expires: g.Expires, EnrolmentGrant: g}, nil
}

// grant checks a token request and turns it into the grant it stores.
func (req TokenRequest) grant(now time.Time) (schemas.EnrolmentGrant, error) {
	var fe schemas.FieldErrors
	g := schemas.EnrolmentGrant{Agent: req.Agent, Labels: req.Labels, Simulator: req.Simulator, Created: now.UTC()}
	if req.Agent != "" && !schemas.ValidAgentID(req.Agent) {
		fe.Add("agent", "%q: use 1-64 letters, digits, '-' or '_'", req.Agent)
	}
	if req.Scope != "" {
		sc, err := schemas.ParseScope(req.Scope)
		if err != nil {
			fe.Add("scope", "%v", err)
		}
		g.Scope = sc
	}
	for k, v := range req.Labels {
		if k == "" || len(k) > 63 || len(v) > 253 || strings.ContainsAny(k, "= ") {
			fe.Add("labels", "label %q=%q: want a key of 1-63 characters without '=' or spaces and a value of up to 253", k, v)
		}
	}
	seen := map[schemas.Host]bool{}
	for i, h := range req.Hosts {
		if err := h.Validate(); err != nil {
			fe.Add(fmt.Sprintf("hosts[%d]", i), "%v", err)
			continue
		}
		if !seen[h] {
			seen[h] = true
			g.Hosts = append(g.Hosts, h)
		}
	}
	for i, r := range req.Ranges {
		if err := r.Validate(); err != nil {
			fe.Add(fmt.Sprintf("ranges[%d]", i), "%v", err)
		}
	}
	g.Ranges = req.Ranges
	for i, id := range req.HostIDs {
		if id <= 0 {
			fe.Add(fmt.Sprintf("host_ids[%d]", i), "want a positive host id, got %d", id)
		}
	}
	g.HostIDs = req.HostIDs
	if len(req.Hosts) == 0 && len(req.Ranges) == 0 {
		fe.Add("hosts", "name at least one host (cloud_id, ip) the agent may serve")
	}
	if len(req.Hosts) > 1000 || len(req.Ranges) > 100 || len(req.HostIDs) > 1000 {
		fe.Add("hosts", "at most 1000 hosts, 1000 host ids and 100 ranges")
	}
	if req.Simulator != (len(req.Ranges) > 0) {
		fe.Add("ranges", "ranges are for simulator pools (simulator: true), and a simulator pool needs ranges")
	}
	ttl := DefaultEnrolTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > MaxEnrolTTL {
			fe.Add("ttl", "%q: want a duration from 1s to %s, like 1h", req.TTL, MaxEnrolTTL)
		}
		ttl = d
	}
	g.Expires = now.Add(ttl).UTC()
	return g, fe.Err()
}

func tokenKey(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// Grant is a token's grant and the revision that consumes it.
type Grant struct {
	schemas.EnrolmentGrant
	key string
	rev uint64
}

// Check authenticates an enrolment token without using it: what it
// allows, or ErrBadEnrolToken. Surfaces call it before reading a body.
func (en *Enroller) Check(ctx context.Context, tok string, now time.Time) (Grant, error) {
	if !strings.HasPrefix(tok, enrolTokenPrefix) || len(tok) > 128 {
		return Grant{}, ErrBadEnrolToken
	}
	key := tokenKey(tok)
	e, err := en.Tokens.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Grant{}, ErrBadEnrolToken
	}
	if err != nil {
		return Grant{}, schemas.Unavailable(err, "read the enrolment token")
	}
	var g Grant
	if err := json.Unmarshal(e.Value(), &g.EnrolmentGrant); err != nil {
		return Grant{}, fmt.Errorf("enrolment token record: %w", err)
	}
	if !now.Before(g.Expires) {
		// expired: it is gone, whoever asks
		_ = en.Tokens.Delete(ctx, key, jetstream.LastRevision(e.Revision()))
		return Grant{}, ErrBadEnrolToken
	}
	g.key, g.rev = key, e.Revision()
	return g, nil
}

// Enrol enrols an agent with a checked grant: it validates the request,
// issues the agent's credentials, uses up the token (one of two
// concurrent uses fails here with ErrBadEnrolToken) and writes the
// agent's Enrolment. An agent id already enrolled and not revoked is a
// conflict; a revoked one may enrol again, with a new key.
func (en *Enroller) Enrol(ctx context.Context, g Grant, req EnrolRequest, now time.Time) (EnrolResponse, error) {
	var fe schemas.FieldErrors
	if !schemas.ValidAgentID(req.Agent) {
		fe.Add("agent", "%q: use 1-64 letters, digits, '-' or '_'", req.Agent)
	} else if g.Agent != "" && req.Agent != g.Agent {
		fe.Add("agent", "this token enrols agent %q only", g.Agent)
	}
	if !nkeys.IsValidPublicUserKey(req.NKey) {
		fe.Add("nkey", "not a public user nkey (U…)")
	}
	if !nkeys.IsValidPublicCurveKey(req.XKey) {
		fe.Add("xkey", "not a public curve xkey (X…)")
	}
	if len(req.Hostname) > 253 {
		fe.Add("hostname", "longer than 253 characters")
	}
	if req.Slots < 0 || req.Slots > 100000 {
		fe.Add("slots", "want 0 (the default, 64) to 100000")
	}
	if err := fe.Err(); err != nil {
		return EnrolResponse{}, err
	}
	if req.Slots == 0 {
		req.Slots = 64
	}
	prev, err := en.Enrolled.Get(ctx, req.Agent)
	var prevRev uint64
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return EnrolResponse{}, schemas.Unavailable(err, "read the enrolment of %s", req.Agent)
	default:
		var old schemas.Enrolment
		if json.Unmarshal(prev.Value(), &old) == nil && old.Revoked == nil {
			return EnrolResponse{}, schemas.Conflict("agent %s is enrolled already; revoke it first to enrol it again", req.Agent)
		}
		if old.NKey == req.NKey {
			return EnrolResponse{}, schemas.Invalid("nkey", "this key was revoked; make new keys to enrol again")
		}
		prevRev = prev.Revision()
	}
	resp := EnrolResponse{Agent: req.Agent, NATSURLs: en.NATSURLs, Scope: g.Scope.String(), Hosts: g.Hosts, Labels: g.Labels}
	if resp.NATSURLs == nil {
		resp.NATSURLs = []string{}
	}
	if resp.Hosts == nil {
		resp.Hosts = []schemas.Host{}
	}
	// Signing and the consumer come before the token is used: a failure
	// here leaves it usable.
	if g.Simulator {
		resp.JWT, err = en.Issuer.SimulatorJWT(req.Agent, req.NKey)
	} else {
		resp.JWT, err = en.Issuer.AgentJWT(req.Agent, req.NKey)
	}
	if errors.Is(err, ErrNoNATSCredentials) {
		resp.JWT, resp.Note = "", ErrNoNATSCredentials.Error()
	} else if err != nil {
		return EnrolResponse{}, fmt.Errorf("issue credentials for %s: %w", req.Agent, err)
	}
	if !g.Simulator {
		if err := en.Issuer.PrepareAgent(ctx, req.Agent, req.Slots); err != nil {
			return EnrolResponse{}, schemas.Unavailable(err, "prepare the task consumer of %s", req.Agent)
		}
	}
	if err := en.Tokens.Delete(ctx, g.key, jetstream.LastRevision(g.rev)); err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
			return EnrolResponse{}, ErrBadEnrolToken // used by a concurrent request
		}
		return EnrolResponse{}, schemas.Unavailable(err, "use the enrolment token")
	}
	rec := schemas.Enrolment{Agent: req.Agent, Scope: g.Scope, Labels: g.Labels, Hosts: g.Hosts, Ranges: g.Ranges,
		Simulator: g.Simulator, HostIDs: g.HostIDs, NKey: req.NKey, XKey: req.XKey, Enrolled: now.UTC()}
	b, _ := json.Marshal(rec)
	if prevRev == 0 {
		_, err = en.Enrolled.Create(ctx, req.Agent, b)
	} else {
		_, err = en.Enrolled.Update(ctx, req.Agent, b, prevRev)
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return EnrolResponse{}, schemas.Conflict("agent %s was enrolled by another request at the same time", req.Agent)
		}
		return EnrolResponse{}, schemas.Unavailable(err, "write the enrolment of %s", req.Agent)
	}
	en.Log.Info("agent enrolled", "agent", req.Agent, "hostname", req.Hostname, "scope", g.Scope.String(),
		"hosts", len(g.Hosts), "simulator", g.Simulator, "nkey", req.NKey)
	return resp, nil
}

// Revoke marks an agent revoked, so the registry stops giving it work at
// once, and revokes its NATS user key. Revoking a revoked agent again is
// harmless and answers its record.
func (en *Enroller) Revoke(ctx context.Context, id, by string, now time.Time) (schemas.Enrolment, error) {
	if !schemas.ValidAgentID(id) {
		return schemas.Enrolment{}, schemas.Invalid("id", "%q is not an agent id", id)
	}
	for attempt := 0; ; attempt++ {
		e, err := en.Enrolled.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return schemas.Enrolment{}, schemas.NotFound("agent %s is not enrolled", id)
		}
		if err != nil {
			return schemas.Enrolment{}, schemas.Unavailable(err, "read the enrolment of %s", id)
		}
		var rec schemas.Enrolment
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return schemas.Enrolment{}, fmt.Errorf("enrolment of %s: %w", id, err)
		}
		if rec.Revoked == nil {
			t := now.UTC()
			rec.Revoked = &t
			b, _ := json.Marshal(rec)
			if _, err := en.Enrolled.Update(ctx, id, b, e.Revision()); err != nil {
				if attempt < 3 {
					continue // changed under us: read it again
				}
				return schemas.Enrolment{}, schemas.Unavailable(err, "revoke %s", id)
			}
		}
		if rec.NKey != "" {
			if err := en.Issuer.Revoke(ctx, rec.NKey); err != nil && !errors.Is(err, ErrNoNATSCredentials) {
				return rec, schemas.Unavailable(err, "revoke the NATS credentials of %s (it is marked revoked; revoke again to retry)", id)
			}
		}
		en.Log.Warn("agent revoked", "agent", id, "by", by, "nkey", rec.NKey)
		return rec, nil
	}
}

// Enrolment reads an agent's enrolment.
func (en *Enroller) Enrolment(ctx context.Context, id string) (schemas.Enrolment, error) {
	if !schemas.ValidAgentID(id) {
		return schemas.Enrolment{}, schemas.Invalid("id", "%q is not an agent id", id)
	}
	e, err := en.Enrolled.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return schemas.Enrolment{}, schemas.NotFound("agent %s is not enrolled", id)
	}
	if err != nil {
		return schemas.Enrolment{}, schemas.Unavailable(err, "read the enrolment of %s", id)
	}
	var rec schemas.Enrolment
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return schemas.Enrolment{}, fmt.Errorf("enrolment of %s: %w", id, err)
	}
	return rec, nil
}

// Allow adds host, and hostID unless 0, to what an enrolled agent may
// claim (compare-and-set): an admin's change of what it may serve.
func (en *Enroller) Allow(ctx context.Context, id string, host schemas.Host, hostID int64) error {
	if err := host.Validate(); err != nil {
		return err
	}
	e, err := en.Enrolled.Get(ctx, id)
	if err != nil {
		return schemas.Unavailable(err, "read the enrolment of %s", id)
	}
	var rec schemas.Enrolment
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return fmt.Errorf("enrolment of %s: %w", id, err)
	}
	hasID := hostID == 0 || slices.Contains(rec.HostIDs, hostID)
	if rec.Allows(host) && hasID {
		return nil
	}
	if !rec.Allows(host) {
		rec.Hosts = append(rec.Hosts, host)
	}
	if !hasID {
		rec.HostIDs = append(rec.HostIDs, hostID)
	}
	b, _ := json.Marshal(rec)
	if _, err := en.Enrolled.Update(ctx, id, b, e.Revision()); err != nil {
		return schemas.Unavailable(err, "update the enrolment of %s", id)
	}
	en.Log.Info("agent host allowed", "agent", id, "host", host.String())
	return nil
}
