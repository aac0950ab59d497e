package filexfer

import (
	"os"
	"path/filepath"
	"regexp"
	"regexp/syntax"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	for _, f := range []string{"a.txt", "b.log", "sub/c.log", "sub/deep/d.log", "x y.log"} {
		writeFile(t, filepath.Join(dir, f), []byte(f), 0o644)
	}
	writeFile(t, filepath.Join(outside, "o.log"), []byte("outside"), 0o644)
	if err := os.Mkdir(filepath.Join(dir, "empty.log"), 0o755); err != nil { // a directory named like a file
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"link-a.log": "a.txt",       // symlink to a regular file: counts
		"linkdir":    "sub",         // symlinked directory: not walked
		"linkout":    outside,       // symlinked directory outside: not walked
		"dangle.log": "nothing.txt", // dangling: nothing
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	q := regexp.QuoteMeta(dir)
	p := func(name string) string { return filepath.Join(dir, name) }

	tests := []struct {
		name        string
		in          []string
		wantFiles   []string
		wantMissing []string
	}{
		{"path", []string{p("a.txt")}, []string{p("a.txt")}, nil},
		{"unclean path", []string{dir + "//sub/../a.txt"}, []string{p("a.txt")}, nil},
		{"missing path", []string{p("nope.txt"), p("a.txt")}, []string{p("a.txt")}, []string{p("nope.txt")}},
		{"directory is not a file", []string{p("sub")}, nil, []string{p("sub")}},
		{"symlink to file", []string{p("link-a.log")}, []string{p("link-a.log")}, nil},
		{"dangling symlink", []string{p("dangle.log")}, nil, []string{p("dangle.log")}},
		{"glob", []string{p("*.log")}, []string{p("b.log"), p("link-a.log"), p("x y.log")}, nil},
		{"glob skips directories", []string{p("*")}, []string{p("a.txt"), p("b.log"), p("link-a.log"), p("x y.log")}, nil},
		{"glob matching nothing", []string{p("*.zip")}, nil, []string{p("*.zip")}},
		{"regex walks, skips symlinked dirs", []string{"REGEX:" + q + `/.*\.log`},
			[]string{p("b.log"), p("link-a.log"), p("sub/c.log"), p("sub/deep/d.log"), p("x y.log")}, nil},
		{"regex is anchored", []string{"REGEX:" + q + `/sub/[cd]\.log`}, []string{p("sub/c.log")}, nil},
		{"regex with explicit anchors", []string{"REGEX:^" + q + `/b\.log$`}, []string{p("b.log")}, nil},
		{"regex partial name does not match", []string{"REGEX:" + q + `/b\.lo`}, nil, []string{"REGEX:" + q + `/b\.lo`}},
		{"regex literal", []string{"REGEX:" + q + `/sub/c\.log`}, []string{p("sub/c.log")}, nil},
		{"regex alternation", []string{"REGEX:" + q + `/(a\.txt|sub/deep/.*)`}, []string{p("a.txt"), p("sub/deep/d.log")}, nil},
		{"regex missing dir", []string{"REGEX:" + q + `/nodir/.*`}, nil, []string{"REGEX:" + q + `/nodir/.*`}},
		{"duplicates once", []string{p("a.txt"), p("*.txt"), "REGEX:" + q + `/a\.txt`}, []string{p("a.txt")}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, missing, err := Resolve(tt.in)
			if err != nil {
				t.Fatalf("Resolve(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(files, tt.wantFiles); diff != "" {
				t.Errorf("files (-got +want):\n%s", diff)
			}
			if diff := cmp.Diff(missing, tt.wantMissing); diff != "" {
				t.Errorf("missing (-got +want):\n%s", diff)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	for _, in := range []string{"relative/a.txt", "REGEX:/tmp/(", "/tmp/[", ""} {
		if files, missing, err := Resolve([]string{in}); err == nil {
			t.Errorf("Resolve(%q) = %q, %q, nil; want an error", in, files, missing)
		}
	}
}

func TestLiteralPrefix(t *testing.T) {
	tests := []struct {
		expr         string
		wantPrefix   string
		wantComplete bool
	}{
		{`/var/log/app/.*\.log`, "/var/log/app/", false},
		{`^/var/log/app/.*\.log$`, "/var/log/app/", false},
		{`/etc/hosts`, "/etc/hosts", true},
		{`^/etc/hosts$`, "/etc/hosts", true},
		{`/var/log/(a|b)/x`, "/var/log/", false},
		{`/data/(v1)/x`, "/data/v1/x", true},
		{`(?i)/etc/x`, "", false},
		{`.*\.log`, "", false},
		{`/opt/a+`, "/opt/", false},
	}
	for _, tt := range tests {
		re, err := syntax.Parse(tt.expr, syntax.Perl)
		if err != nil {
			t.Fatal(err)
		}
		gotPrefix, gotComplete := literalPrefix(re)
		if gotPrefix != tt.wantPrefix || gotComplete != tt.wantComplete {
			t.Errorf("literalPrefix(%q) = %q, %v; want %q, %v", tt.expr, gotPrefix, gotComplete, tt.wantPrefix, tt.wantComplete)
		}
	}
}
