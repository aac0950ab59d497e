package schemas

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
)

func curve(t *testing.T) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return kp, pub
}

// TestSealForAgentOpen seals values to two agents: each opens its own
// task's copy, a third agent cannot, and nothing sealed holds the values.
func TestSealForAgentOpen(t *testing.T) {
	api, _ := curve(t)
	a1, p1 := curve(t)
	a2, p2 := curve(t)
	a3, _ := curve(t)
	sc := &Script{Content: "echo", Sensitive: true, Args: []string{"arg-secret", "x y"}, Env: map[string]string{"TOKEN": "env-secret"}}
	if err := sc.Seal(api, map[string]string{"a1": p1, "a2": p2}); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(sc)
	if strings.Contains(string(b), "secret") {
		t.Fatalf("sealed script holds a value: %s", b)
	}
	if !slices.Equal(sc.Args, []string{Masked, Masked}) || sc.Env["TOKEN"] != Masked {
		t.Errorf("sealed script: args %q env %q, want masked", sc.Args, sc.Env)
	}
	for _, c := range []struct {
		agent string
		kp    nkeys.KeyPair
	}{{"a1", a1}, {"a2", a2}} {
		task := sc.ForAgent(c.agent)
		if task.Sealed.Keys != nil || task.Sealed.Key == "" || sc.Sealed.Keys[c.agent] == "" {
			t.Fatalf("%s: task script %+v", c.agent, task.Sealed)
		}
		open, err := task.Open(c.kp)
		if err != nil {
			t.Fatalf("%s: %v", c.agent, err)
		}
		if !slices.Equal(open.Args, []string{"arg-secret", "x y"}) || open.Env["TOKEN"] != "env-secret" || open.Sealed != nil {
			t.Errorf("%s opened %+v", c.agent, open)
		}
	}
	if _, err := sc.ForAgent("a3").Open(a3); !errors.Is(err, ErrNotSealedTo) {
		t.Errorf("an agent it was not sealed to: got %v, want ErrNotSealedTo", err)
	}
	stolen := sc.ForAgent("a1")
	if _, err := stolen.Open(a3); err == nil {
		t.Error("another agent opened a1's data key")
	}
	if sc.Args[0] != Masked {
		t.Error("opening changed the spec's script")
	}
}

// FuzzOpen feeds arbitrary sealed fields to an agent's Open: it never
// panics, and only the real sealed values open.
func FuzzOpen(f *testing.F) {
	api, _ := nkeys.CreateCurveKeys()
	agent, _ := nkeys.CreateCurveKeys()
	pub, _ := agent.PublicKey()
	sc := &Script{Content: "echo", Sensitive: true, Args: []string{"a"}, Env: map[string]string{"K": "v"}}
	if err := sc.Seal(api, map[string]string{"a1": pub}); err != nil {
		f.Fatal(err)
	}
	task := sc.ForAgent("a1")
	f.Add(task.Sealed.Sender, task.Sealed.Key, task.Sealed.Box)
	f.Add("", "", "")
	f.Add(task.Sealed.Sender, task.Sealed.Key, "AAAA")
	f.Fuzz(func(t *testing.T, sender, key, box string) {
		c := *task
		c.Sealed = &Sealed{Sender: sender, Key: key, Box: box}
		open, err := c.Open(agent)
		if err == nil && (open.Args[0] != "a" || open.Env["K"] != "v") {
			t.Fatalf("opened to %+v", open)
		}
	})
}
