package api_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
)

func identities(t testing.TB) api.IdentityStore {
	t.Helper()
	js := testenv.JetStream(t)
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: schemas.BucketIdentities})
	if err != nil {
		t.Fatal(err)
	}
	return api.IdentityStore{KV: kv}
}

// TestIdentityStore: a token opens its record until revoked; the store
// keeps only its hash; an app's secret opens only its own code.
func TestIdentityStore(t *testing.T) {
	ctx := t.Context()
	st := identities(t)
	biz2 := []schemas.Scope{{Type: "biz", ID: "2"}}
	cr, token, err := st.Create(ctx, api.NewCredential{Kind: api.KindBearer, Owner: "alice", Role: api.RoleOperator, Scopes: biz2, CreatedBy: "admin"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(token, "fjt_") || len(token) < 40 || cr.SecretHash != api.HashSecret(token) {
		t.Errorf("token %q, record %+v", token, cr)
	}
	e, _ := st.KV.Get(ctx, "bearer."+cr.ID)
	if strings.Contains(string(e.Value()), token) {
		t.Error("the stored record holds the token")
	}
	got, err := st.Verify(ctx, api.KindBearer, "", token, time.Now())
	if err != nil || got.Owner != "alice" || got.Role != api.RoleOperator {
		t.Fatalf("verify: %+v %v", got, err)
	}
	if _, err := st.Verify(ctx, api.KindBearer, "", token+"x", time.Now()); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("a wrong token: %v", err)
	}
	if _, err := st.Revoke(ctx, api.KindBearer, cr.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Verify(ctx, api.KindBearer, "", token, time.Now()); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("a revoked token: %v", err)
	}
	if _, _, err := st.Create(ctx, api.NewCredential{Kind: api.KindBearer, Owner: "bob", Role: api.RoleViewer}, time.Now()); !errors.Is(err, schemas.ErrInvalid) {
		t.Errorf("a viewer of no scope: %v", err)
	}
	app, secret, err := st.Create(ctx, api.NewCredential{Kind: api.KindBKApp, AppCode: "portal", Role: api.RoleOperator, Scopes: biz2}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Create(ctx, api.NewCredential{Kind: api.KindBKApp, AppCode: "portal", Role: api.RoleOperator, Scopes: biz2}, time.Now()); !errors.Is(err, schemas.ErrConflict) {
		t.Errorf("the same app code twice: %v", err)
	}
	if _, err := st.Verify(ctx, api.KindBKApp, "portal", secret, time.Now()); err != nil {
		t.Errorf("app: %v", err)
	}
	if _, err := st.Verify(ctx, api.KindBKApp, "other", secret, time.Now()); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("an app's secret under another code: %v", err)
	}
	if _, err := st.Verify(ctx, api.KindBearer, "", secret, time.Now()); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("an app's secret as a bearer token: %v", err)
	}
	all, err := st.List(ctx, api.KindBKApp)
	if err != nil || len(all) != 1 || all[0].ID != app.ID {
		t.Errorf("list: %+v %v", all, err)
	}
}

// BenchmarkVerifyBearer measures the per-request cost of looking a token
// up in KV (no cache, so a revocation holds at once on every API).
func BenchmarkVerifyBearer(b *testing.B) {
	st := identities(b)
	_, token, err := st.Create(context.Background(), api.NewCredential{Kind: api.KindBearer, Owner: "bench", Role: api.RoleAdmin}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := st.Verify(context.Background(), api.KindBearer, "", token, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCredentialExpiry: a credential given a ttl or an expires_at opens
// until that moment and is refused from it on, like a revoked one; one
// given neither never expires; a bad ttl or expiry is invalid.
func TestCredentialExpiry(t *testing.T) {
	ctx := t.Context()
	st := identities(t)
	biz2 := []schemas.Scope{{Type: "biz", ID: "2"}}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cr, token, err := st.Create(ctx, api.NewCredential{Kind: api.KindBearer, Owner: "tess", Role: api.RoleViewer, Scopes: biz2, TTL: "720h"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(720 * time.Hour); cr.ExpiresAt == nil || !cr.ExpiresAt.Equal(want) {
		t.Fatalf("expires_at %v, want %v", cr.ExpiresAt, want)
	}
	if _, err := st.Verify(ctx, api.KindBearer, "", token, now.Add(720*time.Hour-time.Second)); err != nil {
		t.Errorf("a second before expiry: %v", err)
	}
	for _, at := range []time.Time{now.Add(720 * time.Hour), now.Add(721 * time.Hour)} {
		if _, err := st.Verify(ctx, api.KindBearer, "", token, at); !errors.Is(err, api.ErrNoCredential) {
			t.Errorf("at %s, %s after expiry: %v, want ErrNoCredential", at, at.Sub(*cr.ExpiresAt), err)
		}
	}
	listed, err := st.List(ctx, api.KindBearer)
	if err != nil || len(listed) != 1 || listed[0].View().ExpiresAt == nil || !listed[0].View().ExpiresAt.Equal(*cr.ExpiresAt) {
		t.Errorf("list: %+v %v", listed, err)
	}

	until := now.Add(time.Hour)
	app, secret, err := st.Create(ctx, api.NewCredential{Kind: api.KindBKApp, AppCode: "brief", Role: api.RoleOperator, Scopes: biz2, ExpiresAt: &until}, now)
	if err != nil || app.ExpiresAt == nil || !app.ExpiresAt.Equal(until) {
		t.Fatalf("app with expires_at: %+v %v", app, err)
	}
	if _, err := st.Verify(ctx, api.KindBKApp, "brief", secret, now); err != nil {
		t.Errorf("app before expiry: %v", err)
	}
	if _, err := st.Verify(ctx, api.KindBKApp, "brief", secret, until); !errors.Is(err, api.ErrNoCredential) {
		t.Errorf("app at expiry: %v", err)
	}

	forever, ftoken, err := st.Create(ctx, api.NewCredential{Kind: api.KindBearer, Owner: "fred", Role: api.RoleViewer, Scopes: biz2}, now)
	if err != nil || forever.ExpiresAt != nil {
		t.Fatalf("no expiry asked: %+v %v", forever, err)
	}
	if _, err := st.Verify(ctx, api.KindBearer, "", ftoken, now.Add(50*365*24*time.Hour)); err != nil {
		t.Errorf("a token without expiry, 50 years on: %v", err)
	}

	past := now.Add(-time.Minute)
	for _, tc := range []struct {
		name, field string
		n           api.NewCredential
	}{
		{"ttl not a duration", "ttl", api.NewCredential{TTL: "a month"}},
		{"ttl negative", "ttl", api.NewCredential{TTL: "-1h"}},
		{"ttl zero", "ttl", api.NewCredential{TTL: "0s"}},
		{"ttl too long", "ttl", api.NewCredential{TTL: "1000000h"}},
		{"expires_at past", "expires_at", api.NewCredential{ExpiresAt: &past}},
		{"expires_at now", "expires_at", api.NewCredential{ExpiresAt: &now}},
		{"both", "ttl", api.NewCredential{TTL: "1h", ExpiresAt: &until}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.n
			n.Kind, n.Owner, n.Role, n.Scopes = api.KindBearer, "bad", api.RoleViewer, biz2
			_, _, err := st.Create(ctx, n, now)
			var fe schemas.FieldErrors
			if !errors.Is(err, schemas.ErrInvalid) || !errors.As(err, &fe) || len(fe) != 1 || fe[0].Field != tc.field {
				t.Errorf("got %v, want one invalid %s", err, tc.field)
			}
		})
	}
}
