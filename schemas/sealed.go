package schemas

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/nacl/secretbox"
)

// Masked stands in for a sensitive value wherever the value itself must
// not be: in a stored spec, a task, an API answer, a log line.
const Masked = "******"

// Sealed is a script's sensitive values sealed to the agents that may run
// it (envelope encryption): the values are encrypted with a random data
// key of the step (NaCl secretbox), and the data key is sealed to each
// agent's curve key (nkeys xkeys) by the API's curve key. Only the API at
// submit time and those agents ever see the values in clear.
type Sealed struct {
	// Sender is the public curve key of the API that sealed the data keys:
	// an agent opens its key with it.
	Sender string `json:"sender"`
	// Box is the values (SealedValues as JSON) in a secretbox under the
	// data key: the 24-byte nonce, then the box, in base64.
	Box string `json:"box"`
	// Keys maps each agent enrolled for one of the step's hosts to the data
	// key sealed to it (base64). Only a job spec has Keys; a task carries
	// its own agent's alone, in Key.
	Keys map[string]string `json:"keys,omitempty"`
	Key  string            `json:"key,omitempty"`
}

// SealedValues is what a Sealed box holds: the clear args and env values
// that stand masked in the script.
type SealedValues struct {
	Args []string          `json:"args,omitempty"`
	Env  map[string]string `json:"env,omitempty"`
}

// ErrNotSealedTo says a task's sensitive values were not sealed to the
// agent that got it (its host had another agent when the job was submitted).
var ErrNotSealedTo = errors.New("they were not sealed to this agent (its host had another agent when the job was submitted)")

// HidesArgs reports whether an agent can hand an interpreter's script its
// arguments without putting them on the command line (where any user can
// read them in /proc/<pid>/cmdline). Sensitive args for another
// interpreter are refused at submit.
func HidesArgs(interpreter string) bool {
	switch interpreter {
	case "bash", "sh", "python3":
		return true
	}
	return false
}

// HasSecrets reports whether a script has sensitive values to seal.
func (sc *Script) HasSecrets() bool {
	return sc != nil && sc.Sensitive && (len(sc.Args) > 0 || len(sc.Env) > 0)
}

// Seal replaces the script's args and env values by Masked and seals the
// clear values to recipients (agent id → public curve key) with sender,
// the API's curve key.
func (sc *Script) Seal(sender nkeys.KeyPair, recipients map[string]string) error {
	pub, err := sender.PublicKey()
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	var key [32]byte
	var nonce [24]byte
	if _, err := rand.Read(key[:]); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	if _, err := rand.Read(nonce[:]); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	plain, _ := json.Marshal(SealedValues{Args: sc.Args, Env: sc.Env})
	s := &Sealed{Sender: pub, Keys: make(map[string]string, len(recipients)),
		Box: base64.StdEncoding.EncodeToString(secretbox.Seal(nonce[:], plain, &nonce, &key))}
	clear(plain)
	for agent, xkey := range recipients {
		b, err := sender.Seal(key[:], xkey)
		if err != nil {
			return fmt.Errorf("seal to agent %s: %w", agent, err)
		}
		s.Keys[agent] = base64.StdEncoding.EncodeToString(b)
	}
	clear(key[:])
	sc.Sealed = s
	sc.Args = maskArgs(sc.Args)
	sc.Env = maskEnv(sc.Env)
	return nil
}

func maskArgs(args []string) []string {
	if args == nil {
		return nil
	}
	out := make([]string, len(args))
	for i := range out {
		out[i] = Masked
	}
	return out
}

func maskEnv(env map[string]string) map[string]string {
	if env == nil {
		return nil
	}
	out := make(map[string]string, len(env))
	for k := range env {
		out[k] = Masked
	}
	return out
}

// ForAgent is the script as a task for agent carries it: with sealed
// values, only that agent's data key. It shares nothing mutable with sc.
func (sc *Script) ForAgent(agent string) *Script {
	if sc == nil || sc.Sealed == nil {
		return sc
	}
	c := *sc
	c.Sealed = &Sealed{Sender: sc.Sealed.Sender, Box: sc.Sealed.Box, Key: sc.Sealed.Keys[agent]}
	return &c
}

// Open returns a copy of a task's script with its sealed values in clear,
// opened with the agent's curve key; a script without sealed values is
// returned as it is.
func (sc *Script) Open(curve nkeys.KeyPair) (*Script, error) {
	if sc == nil || sc.Sealed == nil {
		return sc, nil
	}
	s := sc.Sealed
	if s.Key == "" {
		return nil, ErrNotSealedTo
	}
	sealedKey, err := base64.StdEncoding.DecodeString(s.Key)
	if err != nil {
		return nil, fmt.Errorf("sealed key: %w", err)
	}
	// nkeys' Open panics on some malformed keys (a 58-character string it
	// fails to decode): check the sender's key first
	if !nkeys.IsValidPublicCurveKey(s.Sender) {
		return nil, fmt.Errorf("sealed by %q: not a public curve key", s.Sender)
	}
	key, err := curve.Open(sealedKey, s.Sender)
	if err != nil {
		return nil, fmt.Errorf("open the data key: %w", err)
	}
	if len(key) != 32 {
		return nil, errors.New("open the data key: not a 32-byte key")
	}
	box, err := base64.StdEncoding.DecodeString(s.Box)
	if err != nil || len(box) < 24 {
		return nil, errors.New("sealed box: malformed")
	}
	var k [32]byte
	var nonce [24]byte
	copy(k[:], key)
	copy(nonce[:], box[:24])
	clear(key)
	plain, ok := secretbox.Open(nil, box[24:], &nonce, &k)
	clear(k[:])
	if !ok {
		return nil, errors.New("sealed box: does not open with the data key")
	}
	var v SealedValues
	err = json.Unmarshal(plain, &v)
	clear(plain)
	if err != nil {
		return nil, fmt.Errorf("sealed values: %w", err)
	}
	if len(v.Args) != len(sc.Args) || len(v.Env) != len(sc.Env) {
		return nil, errors.New("sealed values do not match the script's args and env")
	}
	c := *sc
	c.Args, c.Env, c.Sealed = v.Args, v.Env, nil
	return &c, nil
}
