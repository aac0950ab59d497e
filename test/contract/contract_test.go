// Package contract holds one contract suite per seed document (the API
// documents in ../shared/seeds that fleetjob's compatibility surfaces
// serve): each feeds the document's own examples to a real system and
// compares the answer's key set, types, envelope and HTTP status with the
// documented ones. octans_test.go is seed 001 (the octans task channel),
// bkjob_test.go seed 003 and docs/bkjob-api-reference.md (BlueKing Job's
// v3 APIs). A new surface adds its own file.
package contract

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// examples reads the documented examples of a seed document kept in
// testdata, copied from the document in its order (each file says where
// from and what had to be fixed to make them JSON).
func examples(t *testing.T, file string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Examples map[string]any `json:"examples"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || len(doc.Examples) == 0 {
		t.Fatalf("%s: %v", file, err)
	}
	return doc.Examples
}

// asJSON decodes a JSON answer into plain values for sameShape.
func asJSON(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not JSON: %s", b)
	}
	return v
}

var index = regexp.MustCompile(`\[\d+\]`)

// sameShape compares an answer with a documented example: every object
// has the documented keys (extra lists keys the answer may add, each with
// its reason where it is declared, by path such as "data.job_instance_id"
// or "data.script_task_logs[].bk_host_id"),
// every value the documented JSON type, and array elements the shape of
// the documented elements (the first documented element of each kind).
func sameShape(t *testing.T, where string, got, documented any, extra map[string]bool) {
	t.Helper()
	var walk func(path string, got, doc any)
	walk = func(path string, got, doc any) {
		gt, dt := jsonType(got), jsonType(doc)
		if dt == "null" {
			return // documented as null: any type once set (e.g. err)
		}
		if gt != dt {
			t.Errorf("%s: %s is %s (%v), documented %s", where, orBody(path), gt, got, dt)
			return
		}
		switch d := doc.(type) {
		case map[string]any:
			g := got.(map[string]any)
			for k, dv := range d {
				gv, ok := g[k]
				if !ok {
					t.Errorf("%s: %s lacks documented key %q", where, orBody(path), k)
					continue
				}
				walk(join(path, k), gv, dv)
			}
			for k := range g {
				if _, ok := d[k]; !ok && !extra[index.ReplaceAllString(join(path, k), "[]")] {
					t.Errorf("%s: %s has undocumented key %q", where, orBody(path), k)
				}
			}
		case []any:
			g := got.([]any)
			if len(d) > 0 && len(g) == 0 {
				t.Errorf("%s: %s is empty, documented with elements", where, orBody(path))
			}
			for i, gv := range g {
				walk(fmt.Sprintf("%s[%d]", path, i), gv, d[min(i, len(d)-1)])
			}
		}
	}
	walk("", got, documented)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orBody(path string) string {
	if path == "" {
		return "the body"
	}
	return strings.TrimPrefix(path, ".")
}

func script(content string, targets ...string) map[string]any {
	return map[string]any{
		"name":    "t",
		"targets": targets,
		"steps":   []any{map[string]any{"script": map[string]any{"content": content}}},
	}
}

// wantShape checks an object's exact key set and each value's JSON type
// (number, string, bool, object, array, null; "time" is a number or null,
// "any" anything).
func wantShape(t *testing.T, where string, v any, shape map[string]string) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: %T is not an object", where, v)
	}
	var got, want []string
	for k := range m {
		got = append(got, k)
	}
	for k := range shape {
		want = append(want, k)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s: keys %v, want %v", where, got, want)
	}
	for k, typ := range shape {
		val, ok := m[k]
		if !ok || typ == "any" {
			continue
		}
		if jt := jsonType(val); jt != typ && !(typ == "time" && (jt == "number" || jt == "null")) {
			t.Errorf("%s: %s is %s (%v), want %s", where, k, jt, val, typ)
		}
	}
	return m
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case float64:
		return "number"
	case string:
		return "string"
	case bool:
		return "bool"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}

func num(v any) int64 {
	f, _ := v.(float64)
	return int64(f)
}

func list(t *testing.T, v any) []any {
	t.Helper()
	l, ok := v.([]any)
	if !ok {
		t.Fatalf("%T is not an array", v)
	}
	return l
}
