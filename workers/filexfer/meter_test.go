package filexfer

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/natsrv"
	"github.com/fleetjob/fleetjob/schemas"
)

func TestSpeedLimit(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("takes 4s")
	}
	// The download goes through a client with a 1s default API timeout,
	// shorter than the 2s transfer: it must not be bounded by it (the
	// object store client's default when ctx has no deadline). The upload
	// goes through one with the default timeout: with 1s, the put's
	// wait for its last acks failed on a busy CI machine.
	srv, user, err := natsrv.StartEphemeral(natsrv.Config{Addr: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("embedded nats: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	obs := connectStore(t, srv.ClientURL(), user)
	shortTimeout := connectStore(t, srv.ClientURL(), user, jetstream.WithDefaultTimeout(time.Second))
	const size, limit = 4 << 20, 2 << 20
	f := writeFile(t, filepath.Join(t.TempDir(), "4mb"), bytes.Repeat([]byte("0123456789abcdef"), size/16), 0o644)

	var rec recorder
	start := time.Now()
	entries, err := Upload(t.Context(), obs, "job/5", srcHost, []string{f}, limit, rec.add)
	if err != nil {
		t.Fatal(err)
	}
	// Only a lower bound: a slow machine may take longer, never less.
	if elapsed := time.Since(start); elapsed < 1500*time.Millisecond {
		t.Errorf("4 MB upload at 2 MB/s took %v, want at least 1.5s", elapsed)
	}
	var ticks int
	for _, l := range rec.all() {
		if l.Status == schemas.FileUploading && l.Progress > 0 {
			ticks++
			if l.Speed <= 0 || !strings.Contains(l.Content, "Uploading") || !strings.Contains(l.Content, "/s") {
				t.Errorf("progress record %+v lacks speed", l)
			}
		}
	}
	if ticks < 2 {
		t.Errorf("%d progress records during a 2s upload, want several", ticks)
	}

	start = time.Now()
	if err := Download(t.Context(), shortTimeout, entries, t.TempDir(), destHost, nil, "", limit, nil); err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed < 1500*time.Millisecond {
		t.Errorf("4 MB download at 2 MB/s took %v, want at least 1.5s", elapsed)
	}
}

func TestSpeedLimitStopsWithContext(t *testing.T) {
	t.Parallel()
	obs := newStore(t)
	f := writeFile(t, filepath.Join(t.TempDir(), "slow"), make([]byte, 8<<20), 0o644)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := Upload(ctx, obs, "job/6", srcHost, []string{f}, 1<<20, nil); err == nil {
		t.Fatal("Upload of 8 MB at 1 MB/s finished within 300ms")
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0B", 1023: "1023B", 1536: "1.5KB", 12_900_000: "12.3MB", 3 << 30: "3.0GB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestMeter(t *testing.T) {
	now := time.Unix(1000, 0)
	m := NewMeter(1000, 200*time.Millisecond)
	m.start, m.last, m.now = now, now, func() time.Time { return now }
	if m.Add(100) {
		t.Error("progress due at once")
	}
	now = now.Add(250 * time.Millisecond)
	if !m.Add(150) {
		t.Error("progress not due after 250ms")
	}
	if got, want := m.Speed(), int64(1000); got != want { // 250 bytes in 250ms
		t.Errorf("Speed = %d, want %d", got, want)
	}
	if got := m.Percent(); got != 25 {
		t.Errorf("Percent = %d, want 25", got)
	}
	if m.Add(10) {
		t.Error("progress due again right away")
	}
}
