package filexfer

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/natsrv"
	"github.com/fleetjob/fleetjob/schemas"
)

var (
	srcHost  = schemas.Host{CloudID: 0, IP: "10.0.0.1"}
	destHost = schemas.Host{CloudID: 0, IP: "10.0.0.2"}
)

// newStore starts an embedded JetStream server with fleetjob's topology
// and returns its artifacts object store.
func newStore(t testing.TB, opts ...jetstream.JetStreamOpt) jetstream.ObjectStore {
	t.Helper()
	s, user, err := natsrv.StartEphemeral(natsrv.Config{Addr: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("embedded nats: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return connectStore(t, s.ClientURL(), user, opts...)
}

// connectStore connects to the server at url and returns its artifacts
// object store, creating fleetjob's topology first.
func connectStore(t testing.TB, url string, user natsrv.User, opts ...jetstream.JetStreamOpt) jetstream.ObjectStore {
	t.Helper()
	nc, err := nats.Connect(url, user.Option())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	if err := schemas.DefaultTopology().Ensure(t.Context(), js); err != nil {
		t.Fatalf("ensure topology: %v", err)
	}
	obs, err := js.ObjectStore(t.Context(), schemas.BucketArtifacts)
	if err != nil {
		t.Fatalf("object store: %v", err)
	}
	return obs
}

// recorder collects progress records.
type recorder struct {
	mu   sync.Mutex
	logs []schemas.FileLog
}

func (r *recorder) add(l schemas.FileLog) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs = append(r.logs, l)
}

// final returns the last record of each source path with the given mode.
func (r *recorder) final(mode int) map[string]schemas.FileLog {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]schemas.FileLog)
	for _, l := range r.logs {
		if l.Mode == mode {
			out[l.SourcePath+"|"+l.DestPath] = l
		}
	}
	return out
}

func (r *recorder) all() []schemas.FileLog {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]schemas.FileLog(nil), r.logs...)
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return path
}

func sha(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// dirNames lists a directory's entries (hidden ones too).
func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	return names
}
