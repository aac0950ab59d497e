package agentkeys

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

func TestKeysAreMadeOnceAndKeptPrivate(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if k1.UserPublic() != k2.UserPublic() || k1.CurvePublic() != k2.CurvePublic() {
		t.Fatal("keys changed between loads")
	}
	if !nkeys.IsValidPublicUserKey(k1.UserPublic()) || !nkeys.IsValidPublicCurveKey(k1.CurvePublic()) {
		t.Fatalf("bad public keys %s %s", k1.UserPublic(), k1.CurvePublic())
	}
	for _, f := range []string{"user.nk", "curve.xk"} {
		st, err := os.Stat(filepath.Join(dir, Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s is %v, want 0600", f, st.Mode().Perm())
		}
	}
	sealed, err := k2.Curve.Seal([]byte("s3cret"), k1.CurvePublic())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k1.Curve.Open(sealed, k2.CurvePublic()); err != nil || string(got) != "s3cret" {
		t.Fatalf("open: %q %v", got, err)
	}
}

// The creds file holds the issued JWT and the user seed, 0600, and is
// what nats.UserCredentials reads.
func TestCredsAreStoredPrivate(t *testing.T) {
	dir := t.TempDir()
	if p, err := Creds(dir); p != "" || err != nil {
		t.Fatalf("creds before enrolment: %q %v", p, err)
	}
	k, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	acct, _ := nkeys.CreateAccount()
	uc := jwt.NewUserClaims(k.UserPublic())
	token, err := uc.Encode(acct)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteCreds(dir, "not a jwt", k); err == nil {
		t.Fatal("stored creds for a bad JWT")
	}
	if err := WriteCreds(dir, token, k); err != nil {
		t.Fatal(err)
	}
	p, err := Creds(dir)
	if err != nil || p == "" {
		t.Fatalf("creds: %q %v", p, err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("creds are %v", st.Mode().Perm())
	}
	b, _ := os.ReadFile(p)
	got, err := jwt.ParseDecoratedJWT(b)
	if err != nil || got != token {
		t.Fatalf("creds JWT %q %v", got, err)
	}
	kp, err := jwt.ParseDecoratedUserNKey(b)
	if err != nil || public(kp) != k.UserPublic() {
		t.Fatalf("creds seed: %v", err)
	}
	_ = os.Chmod(p, 0o644)
	if _, err := Creds(dir); err == nil {
		t.Fatal("world-readable creds accepted")
	}
}
