package filexfer

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"regexp/syntax"
	"strings"
)

// regexPrefix marks a BlueKing-style regular-expression source path.
const regexPrefix = "REGEX:"

// Resolve expands source paths into the regular files they name, in input
// order without duplicates. Each path is an absolute path, an absolute glob
// (filepath.Glob), or "REGEX:" and a regular expression matched against
// whole absolute paths (implicitly anchored ^…$) found by walking from the
// longest literal directory prefix of the expression ("/" when it has none;
// a walk from "/" skips /proc and /sys). Only regular files count: a
// symlink to a regular file does, directories never do, and the walk does
// not descend into symlinked directories. missing lists the inputs that
// matched no file; err reports a malformed input.
func Resolve(paths []string) (files []string, missing []string, err error) {
	seen := make(map[string]bool)
	for _, p := range paths {
		var got []string
		switch expr, isRegex := strings.CutPrefix(p, regexPrefix); {
		case isRegex:
			got, err = resolveRegex(expr)
		case !filepath.IsAbs(p):
			err = fmt.Errorf("%q is not an absolute path", p)
		case strings.ContainsAny(p, `*?[\`):
			got, err = resolveGlob(p)
		case isRegular(p):
			got = []string{filepath.Clean(p)}
		}
		if err != nil {
			return nil, nil, fmt.Errorf("resolve %q: %w", p, err)
		}
		if len(got) == 0 {
			missing = append(missing, p)
		}
		for _, f := range got {
			if !seen[f] {
				seen[f] = true
				files = append(files, f)
			}
		}
	}
	return files, missing, nil
}

// isRegular reports whether p is, or links to, a regular file.
func isRegular(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

func resolveGlob(pattern string) ([]string, error) {
	matches, err := filepath.Glob(pattern)
	if err != nil {
		return nil, fmt.Errorf("glob: %w", err)
	}
	out := matches[:0]
	for _, m := range matches {
		if isRegular(m) {
			out = append(out, m)
		}
	}
	return out, nil
}

func resolveRegex(expr string) ([]string, error) {
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, fmt.Errorf("regular expression: %w", err)
	}
	parsed, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil, fmt.Errorf("regular expression: %w", err)
	}
	prefix, complete := literalPrefix(parsed)
	if complete {
		if filepath.IsAbs(prefix) && isRegular(prefix) {
			return []string{prefix}, nil
		}
		return nil, nil
	}
	root := "/"
	if i := strings.LastIndexByte(prefix, '/'); i > 0 && prefix[0] == '/' {
		// The trailing slash makes WalkDir follow a root that is a symlink
		// (/var/run -> /run) while paths keep the spelling the user wrote.
		root = prefix[:i+1]
	}
	var out []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return nil // unreadable or vanished: matches nothing
		case d.IsDir():
			if root == "/" && (p == "/proc" || p == "/sys") {
				return filepath.SkipDir
			}
			return nil
		case !re.MatchString(p):
			return nil
		case d.Type().IsRegular(), d.Type()&fs.ModeSymlink != 0 && isRegular(p):
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walk %s: %w", root, err)
	}
	return out, nil
}

// literalPrefix returns the literal text every match of re starts with,
// and whether that text is the whole of re. Case-folded literals count as
// no prefix; leading ^ and \A are skipped.
func literalPrefix(re *syntax.Regexp) (prefix string, complete bool) {
	switch re.Op {
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase != 0 {
			return "", false
		}
		return string(re.Rune), true
	case syntax.OpCapture:
		return literalPrefix(re.Sub[0])
	case syntax.OpConcat:
		var b strings.Builder
		for i, sub := range re.Sub {
			if b.Len() == 0 && (sub.Op == syntax.OpBeginText || sub.Op == syntax.OpBeginLine) {
				continue
			}
			if i == len(re.Sub)-1 && (sub.Op == syntax.OpEndText || sub.Op == syntax.OpEndLine) {
				return b.String(), true
			}
			p, whole := literalPrefix(sub)
			b.WriteString(p)
			if !whole {
				return b.String(), false
			}
		}
		return b.String(), true
	}
	return "", false
}
