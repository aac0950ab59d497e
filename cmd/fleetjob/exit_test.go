package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/fleetjob/fleetjob/workers/agent"
)

// A revoked agent's error, however wrapped, exits 77; anything else 1.
func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"plain", errors.New("connect nats: dial tcp: connection refused"), 1},
		{"revoked", agent.ErrRevoked, exitRevoked},
		{"revoked, wrapped twice", fmt.Errorf("run: %w", fmt.Errorf("nats refused agent a1: %w", agent.ErrRevoked)), exitRevoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitCode(tc.err); got != tc.want {
				t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}
