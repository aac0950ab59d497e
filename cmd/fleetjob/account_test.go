package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetjob/fleetjob/internal/testenv"
)

// runCLI runs the binary's command line in-process and returns its output.
func runCLI(t *testing.T, environ []string, args ...string) (string, error) {
	t.Helper()
	root := newRoot(environ)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// fleetjob account set, list and delete manage a running API's aliases,
// with the token from the environment or from serve's data directory.
func TestAccountCommands(t *testing.T) {
	s := testenv.Start(t, testenv.Options{})
	environ := []string{"FLEETJOB_API=" + s.APIURL, "FLEETJOB_TOKEN=" + s.Token}
	if out, err := runCLI(t, environ, "account", "set", "biz:2", "app", "nobody"); err != nil || !strings.Contains(out, "biz:2  app    nobody") {
		t.Fatalf("set: %v\n%s", err, out)
	}
	if _, err := runCLI(t, environ, "account", "set", "biz:2", "root", "--deny"); err != nil {
		t.Fatalf("set --deny: %v", err)
	}
	if _, err := runCLI(t, environ, "account", "set", "biz:2", "x", "Not A User"); err == nil || !strings.Contains(err.Error(), "os_user") {
		t.Fatalf("a bad OS user: %v", err)
	}
	// the token serve keeps in the data directory, and the API by flag
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte(s.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, nil, "account", "list", "--scope", "biz:2", "--api", s.APIURL, "--data-dir", dir)
	if err != nil || !strings.Contains(out, "app") || !strings.Contains(out, "(denied)") || strings.Contains(out, "global") {
		t.Fatalf("list biz:2: %v\n%s", err, out)
	}
	if out, err := runCLI(t, environ, "account", "list"); err != nil || !strings.Contains(out, "global  root   root") {
		t.Fatalf("list all (with the default global root): %v\n%s", err, out)
	}
	if _, err := runCLI(t, environ, "account", "delete", "biz:2", "app"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := runCLI(t, environ, "account", "delete", "biz:2", "app"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("delete again: %v", err)
	}
	if _, err := runCLI(t, []string{"FLEETJOB_API=" + s.APIURL, "FLEETJOB_TOKEN=wrong"}, "account", "list"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("a wrong token: %v", err)
	}
}
