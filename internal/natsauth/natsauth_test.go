package natsauth_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/fleetjob/fleetjob/internal/natsauth"
)

// The keys are made once, 0600, and reused: a restart keeps every
// credential issued before it valid.
func TestAuthorityKeepsItsKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	a, err := natsauth.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := natsauth.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.OperatorPublic() != b.OperatorPublic() || a.AccountPublic() != b.AccountPublic() || a.SystemPublic() != b.SystemPublic() {
		t.Fatal("a second start made new keys")
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %o, want 700", st.Mode().Perm())
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.nk"))
	if len(files) != 3 {
		t.Fatalf("key files %v, want 3", files)
	}
	for _, f := range files {
		if st, _ := os.Stat(f); st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %o, want 600", f, st.Mode().Perm())
		}
	}
}

func TestAgentJWTRefusesBadInput(t *testing.T) {
	a, err := natsauth.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	user, _ := nkeys.CreateUser()
	pub, _ := user.PublicKey()
	if _, err := a.AgentJWT("a.b", pub); err == nil {
		t.Error("an agent id with a dot (a subject token separator) was accepted")
	}
	if _, err := a.AgentJWT("a1", a.AccountPublic()); err == nil {
		t.Error("an account key was accepted as an agent's user key")
	}
	if _, err := a.AgentJWT("a1", pub); err != nil {
		t.Errorf("a good agent: %v", err)
	}
}

// Every shipped nats-server configuration includes the snippet that
// nats-auth init writes and so runs in operator mode with the authority's
// operator and system account.
func TestShippedConfigsTrustTheAuthority(t *testing.T) {
	a, err := natsauth.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	snippet, err := a.ServerConfig(filepath.Join(dir, "accounts"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "auth.conf"), []byte(snippet), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "auth"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "auth", "auth.conf"), []byte(snippet), 0o600); err != nil {
		t.Fatal(err)
	}
	confs, _ := filepath.Glob("../../deployments/nats/*.conf")
	confs = append(confs, "../../deployments/compose/nats.conf")
	if len(confs) < 4 {
		t.Fatalf("shipped configs: %v", confs)
	}
	for _, c := range confs {
		b, err := os.ReadFile(c)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, filepath.Base(c))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Errorf("%s: %v", c, err)
			continue
		}
		if len(opts.TrustedOperators) != 1 || opts.TrustedOperators[0].Subject != a.OperatorPublic() || opts.SystemAccount != a.SystemPublic() {
			t.Errorf("%s: does not trust the authority's operator and system account", c)
		}
		if opts.AccountResolver == nil {
			t.Errorf("%s: no account resolver", c)
		}
	}
}
