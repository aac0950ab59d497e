package natsrv

import (
	"fmt"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// StartEphemeral runs a server (cfg.Auth is ignored) that trusts an
// operator made now and kept only in memory, with one JetStream account,
// and returns a user of that account allowed everything. Package tests that need a plain JetStream use it: they run
// with authentication like everything else, and fleetjob's own roles and
// their permissions (package natsauth) are tested in their own suites.
func StartEphemeral(cfg Config) (*server.Server, User, error) {
	op, _ := nkeys.CreateOperator()
	sys, _ := nkeys.CreateAccount()
	acc, _ := nkeys.CreateAccount()
	user, _ := nkeys.CreateUser()
	pub := func(kp nkeys.KeyPair) string { p, _ := kp.PublicKey(); return p }

	oc := jwt.NewOperatorClaims(pub(op))
	oc.SystemAccount = pub(sys)
	opJWT, err := oc.Encode(op)
	if err != nil {
		return nil, User{}, fmt.Errorf("ephemeral operator: %w", err)
	}
	sc := jwt.NewAccountClaims(pub(sys))
	sysJWT, err := sc.Encode(op)
	if err != nil {
		return nil, User{}, fmt.Errorf("ephemeral system account: %w", err)
	}
	ac := jwt.NewAccountClaims(pub(acc))
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accJWT, err := ac.Encode(op)
	if err != nil {
		return nil, User{}, fmt.Errorf("ephemeral account: %w", err)
	}
	uc := jwt.NewUserClaims(pub(user))
	userJWT, err := uc.Encode(acc)
	if err != nil {
		return nil, User{}, fmt.Errorf("ephemeral user: %w", err)
	}
	seed, _ := user.Seed()
	cfg.Auth = &Auth{OperatorJWT: opJWT, SystemAccount: pub(sys),
		Accounts: map[string]string{pub(sys): sysJWT, pub(acc): accJWT}}
	s, err := Start(cfg)
	if err != nil {
		return nil, User{}, err
	}
	return s, User{JWT: userJWT, Seed: string(seed)}, nil
}

// User is a user's credentials: its JWT and its key's seed.
type User struct{ JWT, Seed string }

// Option is the connect option that authenticates as u.
func (u User) Option() nats.Option { return nats.UserJWTAndSeed(u.JWT, u.Seed) }
