package api_test

import (
	"context"
	"errors"
	"strings"
	"testing"

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
	cr, token, err := st.Create(ctx, api.NewCredential{Kind: api.KindBearer, Owner: "alice", Role: api.RoleOperator, Scopes: biz2, CreatedBy: "admin"})
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
	got, err := st.Verify(ctx, api.KindBearer, "", token)
	if err != nil || got.Owner != "alice" || got.Role != api.RoleOperator {
		t.Fatalf("verify: %+v %v", got, err)
	}
	if _, err := st.Verify(ctx, api.KindBearer, "", token+"x"); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("a wrong token: %v", err)
	}
	if _, err := st.Revoke(ctx, api.KindBearer, cr.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Verify(ctx, api.KindBearer, "", token); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("a revoked token: %v", err)
	}
	if _, _, err := st.Create(ctx, api.NewCredential{Kind: api.KindBearer, Owner: "bob", Role: api.RoleViewer}); !errors.Is(err, schemas.ErrInvalid) {
		t.Errorf("a viewer of no scope: %v", err)
	}
	app, secret, err := st.Create(ctx, api.NewCredential{Kind: api.KindBKApp, AppCode: "portal", Role: api.RoleOperator, Scopes: biz2})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Create(ctx, api.NewCredential{Kind: api.KindBKApp, AppCode: "portal", Role: api.RoleOperator, Scopes: biz2}); !errors.Is(err, schemas.ErrConflict) {
		t.Errorf("the same app code twice: %v", err)
	}
	if _, err := st.Verify(ctx, api.KindBKApp, "portal", secret); err != nil {
		t.Errorf("app: %v", err)
	}
	if _, err := st.Verify(ctx, api.KindBKApp, "other", secret); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("an app's secret under another code: %v", err)
	}
	if _, err := st.Verify(ctx, api.KindBearer, "", secret); !errors.Is(err, api.ErrUnauthorized) {
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
	_, token, err := st.Create(context.Background(), api.NewCredential{Kind: api.KindBearer, Owner: "bench", Role: api.RoleAdmin})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := st.Verify(context.Background(), api.KindBearer, "", token); err != nil {
			b.Fatal(err)
		}
	}
}
