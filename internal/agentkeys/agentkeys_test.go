package agentkeys

import (
	"os"
	"path/filepath"
	"testing"

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
