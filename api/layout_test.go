package api

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLayout holds the API to its shape: no package under api/ imports a
// workers package (reads come through the interfaces in ports.go), and no
// surface imports another surface.
func TestLayout(t *testing.T) {
	const module = "github.com/fleetjob/fleetjob/"
	surfaces := map[string]bool{"native": true, "octans": true, "bkjob": true, "container": true, "datahub": true, "logkit": true}
	checked := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		from := filepath.Dir(path)
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			rel, ours := strings.CutPrefix(p, module)
			if !ours {
				continue
			}
			if strings.HasPrefix(rel, "workers/") {
				t.Errorf("%s imports %s: the API reads through its own interfaces, adapted in internal/roles", path, p)
			}
			if to, ok := strings.CutPrefix(rel, "api/"); ok && surfaces[to] && surfaces[from] && to != from {
				t.Errorf("%s imports %s: a surface never imports another", path, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("only %d files checked: is the test running in api/?", checked)
	}
}
