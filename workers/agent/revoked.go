package agent

// This file holds what an agent does when its NATS connection is gone for
// good: closed by nats.go, most often because the server refused the
// agent's credentials (a revocation), and never reopened.

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
)

// ErrRevoked is returned by Run (and by a role that cannot connect) when
// the NATS server refuses this agent's credentials: its user was revoked,
// or its credentials are not valid on this server. Retrying cannot help;
// the binary exits with a code of its own so a supervisor need not
// restart it.
var ErrRevoked = errors.New("this agent's credentials were revoked: re-enrol with fleetjob agent --enrol <api-url> --token <token from fleetjob enrolment create>")

// authMessages are the servers' auth refusals as nats.go words them; a
// refusal read during a reconnect is kept as the server's own text
// ("nats: user authentication revoked"), which errors.Is does not match
// with nats.ErrAuthRevoked.
var authMessages = []string{nats.AUTHORIZATION_ERR, nats.AUTHENTICATION_REVOKED_ERR,
	nats.AUTHENTICATION_EXPIRED_ERR, nats.ACCOUNT_AUTHENTICATION_EXPIRED_ERR}

// AuthRefused reports whether err is a NATS server refusing the
// connection's credentials: "Authorization Violation" (what a revoked user
// gets when it connects again), "User Authentication Revoked" (what cuts
// its live connection), or an expired user or account.
func AuthRefused(err error) bool {
	if err == nil {
		return false
	}
	for _, sentinel := range []error{nats.ErrAuthorization, nats.ErrAuthRevoked, nats.ErrAuthExpired, nats.ErrAccountAuthExpired} {
		if errors.Is(err, sentinel) {
			return true
		}
	}
	msg := strings.ToLower(err.Error())
	for _, m := range authMessages {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// connectionLost is why Run ends when the connection closed under it.
// nats.go reconnects forever through restarts and network faults; it
// closes the connection for good only when a server refuses its
// credentials twice in a row (unless IgnoreAuthErrorAbort), so a closed
// connection whose last error is an auth refusal is a confirmed one.
func (a *Agent) connectionLost() error {
	err := a.nc.LastError()
	if AuthRefused(err) {
		return fmt.Errorf("nats refused agent %s (%v): %w", a.cfg.ID, err, ErrRevoked)
	}
	return fmt.Errorf("agent %s: nats connection closed: %w", a.cfg.ID, err)
}

// abandon ends the executions of an agent whose connection will not come
// back: running scripts are killed at once, with no grace, since their
// output and result can no longer be stored; what they produced stays in
// the journal and the spool, and the next start (re-enrolled) reports them
// interrupted.
func (a *Agent) abandon() {
	a.mu.Lock()
	for _, e := range a.running {
		e.kill(killShutdown)
	}
	a.mu.Unlock()
	a.haltNow() // no retrying of output: nothing can store it
	a.wg.Wait() // each execution ends once its killed process group is gone
}
