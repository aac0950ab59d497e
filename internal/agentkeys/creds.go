package agentkeys

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nats-io/jwt/v2"
)

// CredsFile is the agent's NATS credentials (its user JWT and nkey seed,
// in the nats creds format) under its data directory.
const CredsFile = "nats.creds"

// CredsPath is where an agent with data directory dataDir keeps its NATS
// credentials.
func CredsPath(dataDir string) string { return filepath.Join(dataDir, Dir, CredsFile) }

// WriteCreds stores the user JWT issued at enrolment with the agent's
// user seed as a creds file, 0600, replacing any earlier one atomically.
func WriteCreds(dataDir, userJWT string, k *Keys) error {
	seed, err := k.User.Seed()
	if err != nil {
		return fmt.Errorf("agent creds: %w", err)
	}
	b, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		return fmt.Errorf("agent creds: the issued JWT: %w", err)
	}
	path := CredsPath(dataDir)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("agent creds: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".creds-*")
	if err != nil {
		return fmt.Errorf("agent creds: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("agent creds: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("agent creds: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("agent creds: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("agent creds: %w", err)
	}
	return nil
}

// Creds returns the path of the stored creds file, or "" when the agent
// has none (it was enrolled where NATS runs without credentials).
func Creds(dataDir string) (string, error) {
	path := CredsPath(dataDir)
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("agent creds: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("agent creds %s are %v: readable by others; make them 0600", path, st.Mode().Perm())
	}
	return path, nil
}
