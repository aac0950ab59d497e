package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetjob/fleetjob/internal/natsrv/natstest"
	"github.com/fleetjob/fleetjob/schemas"
)

// accountsKV is the accounts bucket of a fresh embedded JetStream.
func accountsKV(t *testing.T) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(natstest.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := schemas.DefaultTopology().Ensure(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), schemas.BucketAccounts)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func accountsCore(t *testing.T, store AccountStore) *Core {
	t.Helper()
	return NewCore("tok", Deps{Accounts: store, Registry: prometheus.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

func scriptSpec(scope *schemas.Scope, user string) *schemas.JobSpec {
	return &schemas.JobSpec{Scope: scope, Steps: []schemas.Step{{Type: schemas.StepScript, Script: &schemas.Script{Content: "id", User: user}}}}
}

// Aliases resolve through the job's scope, then the global set; a scope
// may deny a global alias; an empty account is the default alias; a
// seeded bucket has root → root once, and a deleted default stays gone.
func TestResolveAccounts(t *testing.T) {
	kv := accountsKV(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if err := SeedAccounts(ctx, kv); err != nil {
		t.Fatal(err)
	}
	store, err := NewKVAccounts(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	c := accountsCore(t, store)
	for _, a := range []schemas.Account{
		{Scope: "biz:2", Alias: "app", OSUser: "www-data"},
		{Scope: "biz:3", Alias: "root", Deny: true},
		{Scope: "global", Alias: "ops", OSUser: "daemon"},
	} {
		if _, err := c.PutAccount(ctx, a, "admin"); err != nil {
			t.Fatalf("put %+v: %v", a, err)
		}
	}
	biz2, biz3 := &schemas.Scope{Type: "biz", ID: "2"}, &schemas.Scope{Type: "biz", ID: "3"}
	cases := []struct {
		scope       *schemas.Scope
		user        string
		want, alias string
		err         string
	}{
		{nil, "", "root", "root", ""},
		{nil, "ops", "daemon", "ops", ""},
		{nil, "app", "", "", `unknown account alias "app" in the global account set`},
		{biz2, "app", "www-data", "app", ""},
		{biz2, "ops", "daemon", "ops", ""}, // the global set, as a fallback
		{biz2, "", "root", "root", ""},
		{biz3, "app", "", "", `unknown account alias "app" in scope biz:3`},
		{biz3, "root", "", "", `"root" is forbidden in scope biz:3`},
		{biz3, "", "", "", `"root" is forbidden in scope biz:3`},
	}
	for _, tc := range cases {
		spec := scriptSpec(tc.scope, tc.user)
		err := c.resolveAccounts(spec)
		sc := spec.Steps[0].Script
		switch {
		case tc.err == "" && (err != nil || sc.User != tc.want || sc.UserAlias != tc.alias):
			t.Errorf("%v %q: %q (alias %q), %v; want %q", tc.scope, tc.user, sc.User, sc.UserAlias, err, tc.want)
		case tc.err != "" && (!errors.Is(err, schemas.ErrInvalid) || !strings.Contains(err.Error(), "steps[0].script.user: ") || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%v %q: %v, want %s", tc.scope, tc.user, err, tc.err)
		}
	}

	// a second API sees the writes through the watch
	other, err := NewKVAccounts(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := other.Account("biz:2", "app"); !ok || a.OSUser != "www-data" || a.By != "admin" {
		t.Fatalf("second store: %+v %v", a, ok)
	}
	if err := c.DeleteAccount(ctx, "global", "root"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, ok := other.Account("", "root"); ok && time.Now().Before(deadline); _, ok = other.Account("", "root") {
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok := other.Account("", "root"); ok {
		t.Fatal("the second store still has the deleted global root")
	}
	if err := SeedAccounts(ctx, kv); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, schemas.AccountKey("", "root")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("a deleted default came back: %v", err)
	}
	if err := c.resolveAccounts(scriptSpec(nil, "")); err == nil {
		t.Fatal("no default alias left, yet an empty account resolved")
	}
}

// Bad registrations are refused field by field; a file step resolves its
// destination and every source.
func TestAccountRegistrationAndFileSteps(t *testing.T) {
	c := accountsCore(t, nil) // no store: the defaults only
	for _, tc := range []struct {
		a     schemas.Account
		field string
	}{
		{schemas.Account{Scope: "biz:x.y", Alias: "a", OSUser: "app"}, "scope"},
		{schemas.Account{Scope: "team:1", Alias: "a", OSUser: "app"}, "scope"},
		{schemas.Account{Scope: "biz:1", Alias: "A b", OSUser: "app"}, "alias"},
		{schemas.Account{Scope: "biz:1", Alias: "a", OSUser: "Not A User"}, "os_user"},
		{schemas.Account{Scope: "biz:1", Alias: "a"}, "os_user"},
		{schemas.Account{Scope: "", Alias: "root", Deny: true}, "deny"},
		{schemas.Account{Scope: "biz:1", Alias: "a", OSUser: "app", Deny: true}, "os_user"},
	} {
		_, err := c.PutAccount(t.Context(), tc.a, "admin")
		var fe schemas.FieldErrors
		if !errors.As(err, &fe) || fe[0].Field != tc.field {
			t.Errorf("%+v: %v, want an error on %s", tc.a, err, tc.field)
		}
	}
	spec := &schemas.JobSpec{Steps: []schemas.Step{{Type: schemas.StepFile, File: &schemas.FileSpec{
		Destination: "/tmp/x", Owner: "ghost",
		Sources: []schemas.FileSource{{Paths: []string{"/a"}}, {Paths: []string{"/b"}, Account: "nope"}},
	}}}}
	err := c.resolveAccounts(spec)
	var fe schemas.FieldErrors
	if !errors.As(err, &fe) || len(fe) != 2 || fe[0].Field != "steps[0].file.owner" || fe[1].Field != "steps[0].file.sources[1].account" {
		t.Fatalf("file step: %v", err)
	}
	if src := spec.Steps[0].File.Sources[0]; src.Account != "root" || src.AccountAlias != "root" {
		t.Fatalf("a source without an account: %+v, want the default root", src)
	}
}
