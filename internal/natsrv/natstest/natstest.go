// Package natstest starts an authenticated, throwaway JetStream server for
// a package's tests (natsrv.StartEphemeral) and connects to it. Packages
// that package testenv cannot import (it imports them) use it; both end
// when the test does.
package natstest

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/fleetjob/fleetjob/internal/natsrv"
)

// Conn starts a server with its store in a temp dir and returns a
// connection of a user allowed everything.
func Conn(t testing.TB, opts ...nats.Option) *nats.Conn {
	t.Helper()
	srv, user, err := natsrv.StartEphemeral(natsrv.Config{Addr: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL(), append([]nats.Option{user.Option()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
