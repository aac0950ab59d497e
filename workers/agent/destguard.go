package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/fleetjob/fleetjob/api/riskrules"
	"github.com/fleetjob/fleetjob/schemas"
)

// Defense in depth for file steps: the API refuses protected destinations
// as written; the agent refuses them again as they resolve on this host,
// so a symlink (/opt/app → /etc) or a distribution's merged /usr (/bin →
// usr/bin) does not get a file past the rules. The agent enforces the
// shipped intercept rules (riskrules.DestinationDefaults), whatever the
// API's rule file says: a host's own floor.

// protectedDestination refuses a download into dest (absolute) of files
// when dest, as written or with its existing part's symlinks resolved, or
// a file written into it, is protected. It reads only dest's ancestors.
func protectedDestination(dest string, files []schemas.FileEntry) error {
	var rules []riskrules.Rule
	for _, r := range riskrules.DestinationDefaults() {
		if r.Action == riskrules.ActionIntercept {
			rules = append(rules, r)
		}
	}
	guard, err := riskrules.New(rules)
	if err != nil {
		return fmt.Errorf("destination rules: %w", err)
	}
	names := make([]string, 0, len(files))
	for _, f := range files {
		names = append(names, f.Name)
	}
	clean := filepath.Clean(dest)
	if _, err := guard.CheckDestination(clean, names); err != nil {
		return err
	}
	resolved, err := resolveExisting(clean, 0)
	if err != nil {
		return fmt.Errorf("destination %s: %w", dest, err)
	}
	if _, err := guard.CheckDestination(resolved, names); err != nil {
		return fmt.Errorf("destination %s resolves to %s: %w", dest, resolved, err)
	}
	return nil
}

// resolveExisting follows the symlinks of the longest existing ancestor of
// p (absolute, clean) and appends the rest, which does not exist yet.
func resolveExisting(p string, depth int) (string, error) {
	if depth > 40 {
		return "", errors.New("too many levels of symbolic links")
	}
	rest := ""
	for dir := p; ; dir = filepath.Dir(dir) {
		r, err := filepath.EvalSymlinks(dir)
		if err == nil {
			return filepath.Join(r, rest), nil
		}
		if !errors.Is(err, fs.ErrNotExist) || dir == filepath.Dir(dir) {
			return "", err
		}
		// a dangling symlink is followed by hand: MkdirAll would write
		// where it points
		if target, lerr := os.Readlink(dir); lerr == nil {
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(dir), target)
			}
			return resolveExisting(filepath.Join(filepath.Clean(target), rest), depth+1)
		}
		rest = filepath.Join(filepath.Base(dir), rest)
	}
}
