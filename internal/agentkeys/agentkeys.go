// Package agentkeys keeps an agent's own keys in its data directory: the
// user nkey its NATS credentials are issued to, and the curve key (xkey)
// sensitive values are sealed to. Both are made on the agent's host and
// only their public halves ever leave it.
package agentkeys

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nats-io/nkeys"
)

// Keys are an agent's key pairs.
type Keys struct {
	User  nkeys.KeyPair // signs its NATS connection's nonce
	Curve nkeys.KeyPair // opens values sealed to it
}

// Dir is where keys live under an agent's data directory.
const Dir = "keys"

// LoadOrCreate reads the keys under dataDir, making any that are missing.
// Seed files are 0600 in a 0700 directory.
func LoadOrCreate(dataDir string) (*Keys, error) {
	dir := filepath.Join(dataDir, Dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent keys: %w", err)
	}
	user, err := loadOrCreate(filepath.Join(dir, "user.nk"), nkeys.CreateUser)
	if err != nil {
		return nil, err
	}
	curve, err := loadOrCreate(filepath.Join(dir, "curve.xk"), nkeys.CreateCurveKeys)
	if err != nil {
		return nil, err
	}
	return &Keys{User: user, Curve: curve}, nil
}

// UserPublic and CurvePublic are the halves that may be shown.
func (k *Keys) UserPublic() string  { return public(k.User) }
func (k *Keys) CurvePublic() string { return public(k.Curve) }

func public(kp nkeys.KeyPair) string {
	p, _ := kp.PublicKey()
	return p
}

func loadOrCreate(path string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		kp, err := nkeys.FromSeed(bytes.TrimSpace(b))
		if err != nil {
			return nil, fmt.Errorf("agent key %s: %w", path, err)
		}
		return kp, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("agent key: %w", err)
	}
	kp, err := create()
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("agent key: %w", err)
	}
	if _, err := f.Write(append(seed, '\n')); err != nil {
		f.Close()
		return nil, fmt.Errorf("agent key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("agent key %s: %w", path, err)
	}
	return kp, nil
}
