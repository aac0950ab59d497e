package api

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/natsrv"
)

// A command larger than the NATS servers accept is refused as too large
// (413), not as unavailable (503), which clients would retry forever.
func TestPublishTooLargeIs413(t *testing.T) {
	srv, user, err := natsrv.StartEphemeral(natsrv.Config{Addr: "127.0.0.1:-1", StoreDir: t.TempDir(), MaxPayload: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL(), user.Option())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	p := JetStreamPublisher{JS: js}
	if _, _, err := p.Publish(t.Context(), "t.small", make([]byte, 1<<10), ""); err != nil {
		t.Fatalf("a small command: %v", err)
	}
	_, _, err = p.Publish(t.Context(), "t.big", make([]byte, 100<<10), "")
	if !errors.Is(err, ErrTooLarge) || StatusOf(err) != http.StatusRequestEntityTooLarge || !strings.Contains(err.Error(), "max_payload") {
		t.Errorf("a 100 KiB command through a 64 KiB server: got %v (status %d), want 413 naming max_payload", err, StatusOf(err))
	}
}
