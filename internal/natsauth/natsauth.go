// Package natsauth is fleetjob's NATS identity authority: decentralized JWT
// auth with nkeys. An operator signs two accounts, the system account and
// FLEETJOB (JetStream enabled); FLEETJOB's key signs one user per service
// role (api, worker, admin, simulator) and one per agent, each with
// publish/subscribe permissions that allow only what that role does. The
// keys live 0600 in a directory, made on first start and reused; the
// server (embedded or a cluster) trusts the operator and resolves the
// accounts with a full resolver, so a revocation pushed to it over the
// system account cuts the user's connections and refuses its reconnects.
package natsauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/fleetjob/fleetjob/internal/natsrv"
	"github.com/fleetjob/fleetjob/schemas"
)

// Account names.
const (
	AccountName   = "FLEETJOB"
	SystemAccount = "SYS"
	OperatorName  = "fleetjob"
)

// Role is a service identity's kind.
type Role string

// Service roles. Agents are not a role: each has its own identity
// (AgentJWT).
const (
	RoleAPI    Role = "api"
	RoleWorker Role = "worker"
	// RoleAdmin creates and changes streams and buckets (the topology) and
	// may do anything in the account: setup, tests, repairs.
	RoleAdmin Role = "admin"
	// RoleSystem is a user of the system account: it pushes account
	// updates (revocations) to the servers.
	RoleSystem Role = "system"
)

// Roles are the service roles Init writes credentials for.
var Roles = []Role{RoleAPI, RoleWorker, RoleAdmin, RoleSystem}

// Authority holds the operator's and the accounts' keys and issues user
// credentials. It is safe for concurrent use.
type Authority struct {
	dir      string
	operator nkeys.KeyPair
	sys      nkeys.KeyPair
	account  nkeys.KeyPair

	mu       sync.Mutex
	revoked  map[string]int64 // user public key → revoked at (unix seconds)
	pushConn *nats.Conn
}

// Key files in an authority's directory.
const (
	operatorFile = "operator.nk"
	sysFile      = "sys-account.nk"
	accountFile  = "account.nk"
	revokedFile  = "revoked.json"
)

// Load opens an authority that exists in dir (made by LoadOrCreate, e.g.
// fleetjob nats-auth init): a process that only uses one must not make
// a new operator no server trusts.
func Load(dir string) (*Authority, error) {
	if _, err := os.Stat(filepath.Join(dir, operatorFile)); err != nil {
		return nil, fmt.Errorf("nats auth dir %s holds no authority (make one with fleetjob nats-auth init --dir): %w", dir, err)
	}
	return LoadOrCreate(dir)
}

// Dir is where the authority's keys are kept.
func (a *Authority) Dir() string { return a.dir }

// LoadOrCreate opens the authority kept in dir, creating its keys (0600,
// in a 0700 directory) the first time.
func LoadOrCreate(dir string) (*Authority, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nats auth dir: %w", err)
	}
	a := &Authority{dir: dir, revoked: map[string]int64{}}
	var err error
	if a.operator, err = loadOrCreateKey(filepath.Join(dir, operatorFile), nkeys.CreateOperator); err != nil {
		return nil, err
	}
	if a.sys, err = loadOrCreateKey(filepath.Join(dir, sysFile), nkeys.CreateAccount); err != nil {
		return nil, err
	}
	if a.account, err = loadOrCreateKey(filepath.Join(dir, accountFile), nkeys.CreateAccount); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, revokedFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("nats auth revocations: %w", err)
	default:
		if err := json.Unmarshal(b, &a.revoked); err != nil {
			return nil, fmt.Errorf("nats auth revocations %s: %w", filepath.Join(dir, revokedFile), err)
		}
	}
	return a, nil
}

func loadOrCreateKey(path string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
	seed, err := os.ReadFile(path)
	if err == nil {
		kp, err := nkeys.FromSeed(seed)
		if err != nil {
			return nil, fmt.Errorf("nats auth key %s: %w", path, err)
		}
		return kp, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("nats auth key: %w", err)
	}
	kp, err := create()
	if err != nil {
		return nil, fmt.Errorf("create nats auth key: %w", err)
	}
	seed, _ = kp.Seed()
	if err := writeFile(path, seed); err != nil {
		return nil, err
	}
	return kp, nil
}

// writeFile writes b to path 0600, atomically.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func public(kp nkeys.KeyPair) string {
	p, _ := kp.PublicKey()
	return p
}

// OperatorPublic is the operator's public key.
func (a *Authority) OperatorPublic() string { return public(a.operator) }

// AccountPublic is the FLEETJOB account's public key.
func (a *Authority) AccountPublic() string { return public(a.account) }

// SystemPublic is the system account's public key.
func (a *Authority) SystemPublic() string { return public(a.sys) }

// OperatorJWT is the operator's self-signed JWT, naming the system account.
func (a *Authority) OperatorJWT() (string, error) {
	oc := jwt.NewOperatorClaims(a.OperatorPublic())
	oc.Name = OperatorName
	oc.SystemAccount = a.SystemPublic()
	return oc.Encode(a.operator)
}

// SystemJWT is the system account's JWT.
func (a *Authority) SystemJWT() (string, error) {
	ac := jwt.NewAccountClaims(a.SystemPublic())
	ac.Name = SystemAccount
	return ac.Encode(a.operator)
}

// AccountJWT is the FLEETJOB account's JWT: JetStream without limits,
// and every revocation so far.
func (a *Authority) AccountJWT() (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.accountJWTLocked()
}

func (a *Authority) accountJWTLocked() (string, error) {
	ac := jwt.NewAccountClaims(a.AccountPublic())
	ac.Name = AccountName
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	for pub, at := range a.revoked {
		ac.RevokeAt(pub, time.Unix(at, 0))
	}
	return ac.Encode(a.operator)
}

// Creds is a user's JWT and the seed of its key: what a process of that
// identity connects with.
type Creds struct {
	JWT  string
	Seed []byte
}

// File is the creds in the .creds file format nats tools read.
func (c Creds) File() ([]byte, error) { return jwt.FormatUserConfig(c.JWT, c.Seed) }

// Option is the connect option that authenticates with these creds.
func (c Creds) Option() nats.Option { return nats.UserJWTAndSeed(c.JWT, string(c.Seed)) }

// ServiceCreds makes a new user of role (its own key, made now) and
// returns its credentials. name shows in the server's connection list.
func (a *Authority) ServiceCreds(role Role, name string) (Creds, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return Creds{}, fmt.Errorf("create %s user: %w", role, err)
	}
	seed, _ := kp.Seed()
	uc := jwt.NewUserClaims(public(kp))
	uc.Name = name
	signer := a.account
	switch role {
	case RoleSystem:
		signer = a.sys
	case RoleAPI, RoleWorker, RoleAdmin:
		uc.Permissions = servicePermissions(role)
	default:
		return Creds{}, fmt.Errorf("unknown nats role %q", role)
	}
	uc.IssuerAccount = ""
	tok, err := uc.Encode(signer)
	if err != nil {
		return Creds{}, fmt.Errorf("sign %s user: %w", role, err)
	}
	return Creds{JWT: tok, Seed: seed}, nil
}

// SimulatorCreds makes the user of a load simulator serving pool.
func (a *Authority) SimulatorCreds(pool string) (Creds, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return Creds{}, fmt.Errorf("create simulator user: %w", err)
	}
	seed, _ := kp.Seed()
	tok, err := a.SimulatorJWT(pool, public(kp))
	if err != nil {
		return Creds{}, err
	}
	return Creds{JWT: tok, Seed: seed}, nil
}

// SimulatorJWT issues the user JWT of a load simulator serving pool, for
// its public user nkey userPub (an enrolled simulator's own key).
func (a *Authority) SimulatorJWT(pool, userPub string) (string, error) {
	if !nkeys.IsValidPublicUserKey(userPub) {
		return "", fmt.Errorf("simulator %s: %q is not a user public nkey", pool, userPub)
	}
	if !schemas.ValidAgentID(pool) {
		return "", fmt.Errorf("simulator pool %q: not a valid id", pool)
	}
	uc := jwt.NewUserClaims(userPub)
	uc.Name = "simulator-" + pool
	uc.Permissions = simulatorPermissions(pool)
	tok, err := uc.Encode(a.account)
	if err != nil {
		return "", fmt.Errorf("sign simulator user: %w", err)
	}
	return tok, nil
}

// AgentJWT issues the user JWT of agent agentID, whose user nkey (made on
// its host; only its public key leaves it) is userPub. It allows exactly
// what that one agent does (AgentPermissions).
func (a *Authority) AgentJWT(agentID, userPub string) (string, error) {
	if !nkeys.IsValidPublicUserKey(userPub) {
		return "", fmt.Errorf("agent %s: %q is not a user public nkey", agentID, userPub)
	}
	perms, err := AgentPermissions(agentID)
	if err != nil {
		return "", err
	}
	uc := jwt.NewUserClaims(userPub)
	uc.Name = "agent-" + agentID
	uc.Permissions = perms
	tok, err := uc.Encode(a.account)
	if err != nil {
		return "", fmt.Errorf("sign agent %s: %w", agentID, err)
	}
	return tok, nil
}

// AgentOption is the connect option of an agent: its JWT and nonces
// signed with its own key (the seed never leaves the agent), plus the
// inbox prefix its permissions allow.
func AgentOption(agentID, userJWT string, kp nkeys.KeyPair) nats.Option {
	return func(o *nats.Options) error {
		if err := nats.UserJWT(func() (string, error) { return userJWT, nil }, kp.Sign)(o); err != nil {
			return err
		}
		return nats.CustomInboxPrefix(AgentInboxPrefix(agentID))(o)
	}
}

// UsePushConnection sets the system-account connection revocations are
// pushed over (a connection made with RoleSystem creds).
func (a *Authority) UsePushConnection(nc *nats.Conn) {
	a.mu.Lock()
	a.pushConn = nc
	a.mu.Unlock()
}

// Revoke revokes the user with public key userPub: it is recorded in the
// account JWT (kept with the keys) and the new JWT is pushed to the
// servers, which close the user's connections and refuse its reconnects.
// Credentials issued to the same key later than now are valid again.
func (a *Authority) Revoke(ctx context.Context, userPub string) error {
	if !nkeys.IsValidPublicUserKey(userPub) {
		return fmt.Errorf("revoke: %q is not a user public nkey", userPub)
	}
	a.mu.Lock()
	// revocations cut credentials issued at or before the time: a
	// credential issued in this same second is cut too
	a.revoked[userPub] = time.Now().Unix()
	b, _ := json.Marshal(a.revoked)
	err := writeFile(filepath.Join(a.dir, revokedFile), b)
	tok, jerr := a.accountJWTLocked()
	nc := a.pushConn
	a.mu.Unlock()
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	if jerr != nil {
		return fmt.Errorf("revoke: %w", jerr)
	}
	if nc == nil {
		return errors.New("revoke: no system connection to push the account update over")
	}
	return Push(ctx, nc, tok)
}

// Push sends an account JWT to the servers over a system-account
// connection and checks the answer.
func Push(ctx context.Context, nc *nats.Conn, accountJWT string) error {
	msg, err := nc.RequestWithContext(ctx, "$SYS.REQ.CLAIMS.UPDATE", []byte(accountJWT))
	if err != nil {
		return fmt.Errorf("push account update: %w", err)
	}
	var rep struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return fmt.Errorf("push account update: answer %q: %w", msg.Data, err)
	}
	if rep.Error != nil {
		return fmt.Errorf("push account update: %d %s", rep.Error.Code, rep.Error.Description)
	}
	return nil
}

// ServerAuth is what the embedded server needs to trust this authority.
func (a *Authority) ServerAuth() (*natsrv.Auth, error) {
	op, err := a.OperatorJWT()
	if err != nil {
		return nil, err
	}
	sys, err := a.SystemJWT()
	if err != nil {
		return nil, err
	}
	acc, err := a.AccountJWT()
	if err != nil {
		return nil, err
	}
	return &natsrv.Auth{OperatorJWT: op, SystemAccount: a.SystemPublic(),
		Accounts: map[string]string{a.SystemPublic(): sys, a.AccountPublic(): acc}}, nil
}

// PrepareAgent creates agent agentID's task consumer (slots tasks in
// flight); agents cannot create consumers. Whoever enrols an agent calls
// it; calling it again is harmless.
func PrepareAgent(ctx context.Context, js jetstream.JetStream, top schemas.Topology, agentID string, slots int) error {
	if !schemas.ValidAgentID(agentID) {
		return fmt.Errorf("agent id %q: %w", agentID, schemas.ErrInvalid)
	}
	if slots <= 0 {
		slots = 64
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, schemas.StreamTasks, top.AgentConsumerConfig(agentID, slots)); err != nil {
		return fmt.Errorf("task consumer of agent %s: %w", agentID, err)
	}
	return nil
}

// PrepareAgent is the package's PrepareAgent.
func (a *Authority) PrepareAgent(ctx context.Context, js jetstream.JetStream, top schemas.Topology, agentID string, slots int) error {
	return PrepareAgent(ctx, js, top, agentID, slots)
}
