package api

// This file holds sealing: a job's sensitive values are sealed to the
// agents enrolled for its hosts before the submit command is published,
// so no stream, bucket, worker, log or answer ever holds them in clear.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/fleetjob/fleetjob/schemas"
)

// seal seals the sensitive values of every script step to the agents
// enrolled for its hosts (see schemas.Script.Seal). A host with no
// enrolled agent to seal to, or sensitive args for an interpreter that
// cannot take them off its command line, is invalid input: nothing is
// queued.
func (c *Core) seal(ctx context.Context, spec *schemas.JobSpec) error {
	hosts := map[schemas.Host]bool{}
	var fe schemas.FieldErrors
	for i, st := range spec.Steps {
		sc := st.Script
		if sc == nil {
			continue
		}
		p := fmt.Sprintf("steps[%d].script", i)
		if sc.Sealed != nil {
			fe.Add(p+".sealed", "is set by the API: send the values in args and env, with sensitive true")
			continue
		}
		if !sc.HasSecrets() {
			continue
		}
		if len(sc.Args) > 0 && !schemas.HidesArgs(sc.Interpreter) {
			fe.Add(p+".args", "sensitive args cannot be given to %s without showing them on its command line: pass them in env", sc.Interpreter)
		}
		for _, h := range st.Targets {
			hosts[h] = true
		}
	}
	if err := fe.Err(); err != nil || len(hosts) == 0 {
		return err
	}
	if c.deps.SealKey == nil || c.deps.Enrolments == nil {
		return schemas.Unavailable(nil, "this API cannot seal sensitive values: it has no curve key or enrolment store")
	}
	enrolled, err := c.deps.Enrolments.Enrolled(ctx, hosts)
	if err != nil {
		return schemas.Unavailable(err, "cannot read the enrolled agents to seal sensitive values to")
	}
	for i := range spec.Steps {
		sc := spec.Steps[i].Script
		if !sc.HasSecrets() {
			continue
		}
		to := map[string]string{}
		for j, h := range spec.Steps[i].Targets {
			n := 0
			for _, e := range enrolled[h] {
				if e.XKey != "" && e.Allows(h) {
					to[e.Agent] = e.XKey
					n++
				}
			}
			if n == 0 {
				fe.Add(fmt.Sprintf("steps[%d].targets[%d]", i, j), "cannot seal sensitive values for host %s: no enrolled agent", h.IP)
			}
		}
		if len(fe) > 0 {
			continue
		}
		if err := sc.Seal(c.deps.SealKey, to); err != nil {
			return fmt.Errorf("steps[%d]: %w", i, err)
		}
	}
	return fe.Err()
}

// Enrolled implements EnrolmentReader. It reads the whole bucket (one
// ordered consumer, not a get per agent): only jobs with sensitive values
// ask.
func (k KVEnrolments) Enrolled(ctx context.Context, hosts map[schemas.Host]bool) (map[schemas.Host][]schemas.Enrolment, error) {
	w, err := k.KV.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("enrolled agents: %w", err)
	}
	defer w.Stop()
	out := map[schemas.Host][]schemas.Enrolment{}
	for {
		var ent jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("enrolled agents: watch ended")
			}
			ent = e
		}
		if ent == nil { // the initial values are all read
			return out, nil
		}
		var e schemas.Enrolment
		if json.Unmarshal(ent.Value(), &e) != nil || e.Revoked != nil {
			continue
		}
		for _, h := range e.Hosts {
			if hosts[h] {
				out[h] = append(out[h], e)
			}
		}
		if len(e.Ranges) > 0 { // a simulator pool's: by range
			for h := range hosts {
				if !slices.Contains(e.Hosts, h) && e.Allows(h) {
					out[h] = append(out[h], e)
				}
			}
		}
	}
}

// LoadOrCreateSealKey reads the API's curve key from path, making it (0600,
// in a 0700 directory) when it is missing.
func LoadOrCreateSealKey(path string) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		kp, err := nkeys.FromCurveSeed(bytes.TrimSpace(b))
		if err != nil {
			return nil, fmt.Errorf("api curve key %s: %w", path, err)
		}
		return kp, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("api curve key: %w", err)
	}
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("api curve key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("api curve key: %w", err)
	}
	if _, err := f.Write(append(seed, '\n')); err != nil {
		f.Close()
		return nil, fmt.Errorf("api curve key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("api curve key %s: %w", path, err)
	}
	return kp, nil
}
