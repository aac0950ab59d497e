package riskrules

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/fleetjob/fleetjob/schemas"
)

// Destination rules protect system directories and critical files from
// file steps. A rule with "paths" instead of "pattern" is one: each path is
// an absolute, clean path.Match pattern ('*' does not cross '/', so /lib*
// is /lib, /lib64, /libx32 and never /lib/app). A file step matches when
// its destination directory, cleaned, is such a path (the directory
// itself: /etc is protected, /etc/myapp is not), or when a file it writes,
// destination plus the file's name, is one (/etc/passwd written by a step
// into /etc/ or naming /etc/passwd as its destination).

// DestinationDefaults returns the shipped destination rules, a new slice on
// every call; Defaults includes them. Agents enforce the intercept ones on
// the destination as it resolves on the host, whatever the API's rule file
// says.
func DestinationDefaults() []Rule {
	return []Rule{
		{
			ID: "protected-dir",
			Paths: []string{"/", "/bin", "/boot", "/dev", "/etc", "/lib*", "/proc", "/root/.ssh", "/home/*/.ssh",
				"/run", "/sbin", "/sys", "/usr", "/usr/bin", "/usr/sbin", "/usr/lib*", "/var",
				"/etc/ssh", "/etc/pam.d", "/etc/security", "/etc/selinux"},
			Action:      ActionIntercept,
			Description: "a system directory: files written there can break or take over the host",
		},
		{
			ID: "protected-file",
			Paths: []string{"/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/sudoers",
				"/etc/ssh/sshd_config", "/etc/fstab", "/etc/crypttab", "/etc/hosts", "/etc/resolv.conf",
				"/etc/ld.so.preload", "/etc/ld.so.conf", "/root/.ssh/authorized_keys", "/root/.bashrc", "/root/.profile"},
			Action:      ActionIntercept,
			Description: "a critical system file",
		},
		{
			ID: "system-config-dir",
			Paths: []string{"/etc/sudoers.d", "/etc/cron.d", "/etc/profile.d", "/etc/systemd/system",
				"/etc/ld.so.conf.d", "/etc/modprobe.d", "/etc/sysctl.d"},
			Action:      ActionScan,
			Description: "files written there change how the host runs",
		},
	}
}

// compilePaths checks a destination rule's paths.
func compilePaths(r Rule) error {
	if r.Pattern != "" {
		return errors.New("a rule has either pattern (scripts) or paths (file destinations), not both")
	}
	if len(r.Languages) > 0 {
		return errors.New("languages apply to pattern rules, not to paths")
	}
	for _, p := range r.Paths {
		if _, err := path.Match(p, ""); err != nil || !path.IsAbs(p) || path.Clean(p) != p {
			return fmt.Errorf("path %q: want a clean absolute path or path.Match pattern", p)
		}
	}
	return nil
}

// FileNames lists what a file step's files are called under its
// destination, as far as is known before any source is read: the base
// name of each source path (a glob pattern when the path is a glob) and of
// each artifact, and "*" for a REGEX: source, whose names nothing bounds.
func FileNames(f *schemas.FileSpec) []string {
	var names []string
	for _, src := range f.Sources {
		if src.Artifact != "" {
			names = append(names, path.Base(src.Artifact))
		}
		for _, p := range src.Paths {
			if strings.HasPrefix(p, "REGEX:") {
				names = append(names, "*")
				continue
			}
			names = append(names, path.Base(p))
		}
	}
	return names
}

// CheckFile matches a file step's destination and the files it writes
// there (FileNames) against the destination rules; see CheckDestination.
// A nil Engine or FileSpec finds nothing.
func (e *Engine) CheckFile(f *schemas.FileSpec) ([]Finding, error) {
	if e == nil || f == nil {
		return nil, nil
	}
	return e.CheckDestination(f.Destination, FileNames(f))
}

// CheckDestination matches dir, a destination directory (cleaned first:
// /etc/../etc/, //etc and /etc/. are /etc), and each file named in names
// (a path element or a glob pattern of one) written into it against the
// destination rules. A finding's Text says what matched ("destination
// /etc", "file /etc/passwd") and its Line is 0. When an intercept rule
// matched, err wraps ErrIntercepted and schemas.ErrInvalid and names the
// first match; the findings are returned either way.
func (e *Engine) CheckDestination(dir string, names []string) (findings []Finding, err error) {
	if e == nil || len(e.dests) == 0 {
		return nil, nil
	}
	dir = path.Clean(dir)
	for _, r := range e.dests {
		if what, ok := r.protects(dir, names); ok {
			findings = append(findings, Finding{RuleID: r.ID, Action: r.Action, Description: r.Description, Text: clip(what)})
		}
	}
	for _, f := range findings {
		if f.Action == ActionIntercept {
			msg := fmt.Sprintf("file step: %s is protected by rule %q", f.Text, f.RuleID)
			if f.Description != "" {
				msg += " (" + f.Description + ")"
			}
			return findings, &interceptError{msg: msg + ": " + ErrIntercepted.Error()}
		}
	}
	return findings, nil
}

// protects reports what of a step writing names into dir (clean) the rule
// protects, if anything.
func (r *compiled) protects(dir string, names []string) (string, bool) {
	for _, p := range r.Paths {
		if ok, _ := path.Match(p, dir); ok {
			return "destination " + dir, true
		}
	}
	for _, n := range names {
		if n == "" || n == "." || n == ".." || strings.Contains(n, "/") {
			continue // not a file name: the step is refused elsewhere
		}
		for _, p := range r.Paths {
			if mayName(p, dir, n) {
				return "file " + path.Join(dir, n), true
			}
		}
	}
	return "", false
}

// mayName reports whether a file called name (a glob pattern or a plain
// name) written into dir may be the protected path p. It errs on the side
// of a match: a glob name matches a protected file it could produce.
func mayName(p, dir, name string) bool {
	if !hasMeta(name) {
		ok, _ := path.Match(p, path.Join(dir, name))
		return ok
	}
	pdir, pbase := path.Split(p)
	if ok, _ := path.Match(path.Clean(pdir), dir); !ok {
		return false
	}
	if hasMeta(pbase) { // two patterns: a match unless the names' literal starts differ
		return strings.HasPrefix(literalPrefix(pbase), literalPrefix(name)) ||
			strings.HasPrefix(literalPrefix(name), literalPrefix(pbase))
	}
	ok, _ := path.Match(name, pbase)
	return ok
}

func hasMeta(s string) bool { return strings.ContainsAny(s, `*?[\`) }

// literalPrefix is the part of a pattern before its first special character.
func literalPrefix(s string) string {
	if i := strings.IndexAny(s, `*?[\`); i >= 0 {
		return s[:i]
	}
	return s
}
