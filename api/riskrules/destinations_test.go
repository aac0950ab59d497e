package riskrules

import (
	"errors"
	"path"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetjob/fleetjob/schemas"
)

func TestCheckDestination(t *testing.T) {
	e, err := New(Defaults())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, dir string
		names     []string
		want      []string // rule ids, in Defaults order
	}{
		// the directories themselves, however written
		{"root", "/", nil, []string{"protected-dir"}},
		{"etc", "/etc", nil, []string{"protected-dir"}},
		{"etc trailing slash", "/etc/", nil, []string{"protected-dir"}},
		{"etc dot dot", "/etc/../etc/", nil, []string{"protected-dir"}},
		{"double slash", "//etc", nil, []string{"protected-dir"}},
		{"dot segment", "/etc/.", nil, []string{"protected-dir"}},
		{"escape above root", "/../../etc", nil, []string{"protected-dir"}},
		{"root by dot dot", "/tmp/..", nil, []string{"protected-dir"}},
		{"boot", "/boot", nil, []string{"protected-dir"}},
		{"bin", "/bin", nil, []string{"protected-dir"}},
		{"sbin", "/sbin/", nil, []string{"protected-dir"}},
		{"lib", "/lib", nil, []string{"protected-dir"}},
		{"lib64", "/lib64", nil, []string{"protected-dir"}},
		{"usr bin", "/usr/bin", nil, []string{"protected-dir"}},
		{"usr sbin", "/usr/sbin", nil, []string{"protected-dir"}},
		{"usr lib x86", "/usr/lib64", nil, []string{"protected-dir"}},
		{"usr libexec", "/usr/libexec", nil, []string{"protected-dir"}},
		{"proc", "/proc", nil, []string{"protected-dir"}},
		{"sys", "/sys", nil, []string{"protected-dir"}},
		{"dev", "/dev", nil, []string{"protected-dir"}},
		{"root ssh", "/root/.ssh", nil, []string{"protected-dir"}},
		{"a user's ssh", "/home/bob/.ssh/", nil, []string{"protected-dir"}},
		{"sshd config dir", "/etc/ssh", nil, []string{"protected-dir"}},
		// critical files: as the destination, or written into a directory
		{"passwd as destination", "/etc/passwd", nil, []string{"protected-file"}},
		{"shadow as destination", "/etc/shadow/", nil, []string{"protected-file"}},
		{"sshd_config as destination", "/etc/ssh/sshd_config", nil, []string{"protected-file"}},
		{"sudoers by name", "/etc", []string{"app.conf", "sudoers"}, []string{"protected-dir", "protected-file"}},
		{"authorized_keys by glob", "/root/.ssh", []string{"auth*"}, []string{"protected-dir", "protected-file"}},
		{"any name from a regex", "/etc/ssh", []string{"*"}, []string{"protected-dir", "protected-file"}},
		// scan: recorded, not refused
		{"sudoers.d", "/etc/sudoers.d", []string{"app"}, []string{"system-config-dir"}},
		{"cron.d", "/etc/cron.d/", []string{"job"}, []string{"system-config-dir"}},
		// subdirectories for applications stay allowed
		{"etc app", "/etc/myapp", []string{"app.conf", "passwd"}, nil},
		{"etc app trailing", "/etc/myapp/", nil, nil},
		{"usr local app", "/usr/local/app/", []string{"*"}, nil},
		{"usr local bin", "/usr/local/bin", []string{"tool"}, nil},
		{"opt", "/opt/app", []string{"shadow"}, nil},
		{"tmp", "/tmp", []string{"*"}, nil},
		{"var lib app", "/var/lib/app", nil, nil},
		{"lib subdirectory", "/lib/app", nil, nil},
		{"home", "/home/bob/app", []string{"authorized_keys"}, nil},
		{"a name that is not a name", "/etc/myapp", []string{"../passwd", "..", ""}, nil},
		{"a glob that cannot be the file", "/root/.ssh2", []string{"*.conf"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			findings, err := e.CheckDestination(c.dir, c.names)
			if diff := cmp.Diff(ruleIDs(findings), c.want); diff != "" {
				t.Errorf("%q %q (-got +want):\n%s", c.dir, c.names, diff)
			}
			refused := false
			for _, f := range findings {
				refused = refused || f.Action == ActionIntercept
				if f.Line != 0 || !strings.HasPrefix(f.Text, "destination /") && !strings.HasPrefix(f.Text, "file /") {
					t.Errorf("finding %+v: want line 0 and what matched", f)
				}
			}
			if refused != (err != nil) || err != nil && (!errors.Is(err, ErrIntercepted) || !errors.Is(err, schemas.ErrInvalid)) {
				t.Errorf("err %v with findings %v", err, findings)
			}
		})
	}
}

func TestCheckDestinationError(t *testing.T) {
	e, err := New(Defaults())
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.CheckDestination("/etc/../etc/", nil)
	want := `file step: destination /etc is protected by rule "protected-dir" (a system directory: files written there can break or take over the host): refused`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	_, err = e.CheckFile(&schemas.FileSpec{Destination: "/etc/myapp/../", Sources: []schemas.FileSource{{Paths: []string{"/srv/build/passwd"}}}})
	if err == nil || !strings.Contains(err.Error(), "destination /etc is protected") {
		t.Errorf("got %v", err)
	}
	_, err = e.CheckFile(&schemas.FileSpec{Destination: "/etc/ssh/", Sources: []schemas.FileSource{{Paths: []string{"REGEX:/srv/.*"}}}})
	if err == nil {
		t.Error("a REGEX: source into /etc/ssh passed")
	}
}

func TestFileNames(t *testing.T) {
	got := FileNames(&schemas.FileSpec{Sources: []schemas.FileSource{
		{Paths: []string{"/srv/a.conf", "/srv/logs/*.log", "REGEX:/srv/.*\\.txt"}},
		{Artifact: "builds/app-1.2.tar.gz"},
	}})
	want := []string{"a.conf", "*.log", "*", "app-1.2.tar.gz"}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("(-got +want):\n%s", diff)
	}
}

// TestDestinationRulesFromFile: a rule file's destination rules replace
// the defaults, with the same actions.
func TestDestinationRulesFromFile(t *testing.T) {
	e, err := New([]Rule{
		{ID: "no-opt", Paths: []string{"/opt", "/srv/*"}, Action: ActionIntercept},
		{ID: "watch-data", Paths: []string{"/data"}, Action: ActionScan, Description: "shared data"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.CheckDestination("/etc", nil); err != nil {
		t.Errorf("/etc refused by rules that do not name it: %v", err)
	}
	if _, err := e.CheckDestination("/srv/app/", nil); !errors.Is(err, ErrIntercepted) {
		t.Errorf("/srv/app: got %v, want refused", err)
	}
	f, err := e.CheckDestination("/data", nil)
	if err != nil || len(f) != 1 || f[0].RuleID != "watch-data" {
		t.Errorf("/data: got %v %v, want one scan finding", f, err)
	}
	if f, _ := e.Check("bash", "cp x /opt"); f != nil {
		t.Errorf("a destination rule matched a script: %v", f)
	}
	for _, c := range []struct {
		rule Rule
		want string
	}{
		{Rule{ID: "rel", Paths: []string{"etc"}, Action: ActionScan}, `path "etc"`},
		{Rule{ID: "unclean", Paths: []string{"/etc/"}, Action: ActionScan}, `path "/etc/"`},
		{Rule{ID: "glob", Paths: []string{"/etc/["}, Action: ActionScan}, `path "/etc/["`},
		{Rule{ID: "both", Paths: []string{"/etc"}, Pattern: "x", Action: ActionScan}, "not both"},
		{Rule{ID: "lang", Paths: []string{"/etc"}, Languages: []string{"bash"}, Action: ActionScan}, "languages"},
		{Rule{ID: "block", Paths: []string{"/etc"}, Action: "block"}, `action "block"`},
	} {
		if _, err := New([]Rule{c.rule}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.rule.ID, err, c.want)
		}
	}
}

// FuzzCheckDestination: any destination and name are matched without a
// panic, cleaning first (a path and its cleaned form answer alike), the
// error agrees with the findings, and nothing below a protected directory
// is refused for being there.
func FuzzCheckDestination(f *testing.F) {
	for _, s := range []string{"/", "/etc", "/etc/../etc/", "//etc", "/etc/.", "/etc/myapp/", "/usr/local/app", "/root/.ssh", "/home/x/.ssh", "", ".", "etc", "/lib64/", "\x00/etc"} {
		f.Add(s, "passwd")
		f.Add(s, "*")
	}
	e, err := New(Defaults())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, dir, name string) {
		findings, err := e.CheckDestination(dir, []string{name})
		again, err2 := e.CheckDestination(path.Clean(dir), []string{name})
		if diff := cmp.Diff(findings, again); diff != "" || (err == nil) != (err2 == nil) {
			t.Errorf("%q and its clean form answer differently: %s", dir, diff)
		}
		refused := false
		for _, fd := range findings {
			refused = refused || fd.Action == ActionIntercept
		}
		if refused != (err != nil) || err != nil && !errors.Is(err, schemas.ErrInvalid) {
			t.Errorf("findings %v, err %v", findings, err)
		}
		if clean := path.Clean(dir); path.IsAbs(clean) && strings.Count(clean, "/") > 3 && !hasMeta(name) {
			// four levels down (/etc/a/b/c): no default protects it
			if err != nil {
				t.Errorf("%q refused: %v", dir, err)
			}
		}
	})
}
