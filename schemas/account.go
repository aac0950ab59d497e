package schemas

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Execution accounts: an admin maps account aliases (what clients name:
// native "user", octans "user", BlueKing "account_alias") to OS users,
// per scope, in the accounts bucket. The API resolves every alias of a
// job before it is queued; agents only ever see OS users.

// DefaultAccountAlias is the alias a step that names no account runs as
// (BlueKing's usual default too). It resolves like any other alias.
const DefaultAccountAlias = "root"

// accountKeyGlobal is the key token of the scope-less (global) set, used
// by jobs without a scope and, as a fallback, by every scope.
const accountKeyGlobal = "global"

var (
	// aliasPattern is an account name (as every surface checks a job's
	// accounts) that is also a key token: no trailing '$'.
	aliasPattern   = regexp.MustCompile(`^[a-z_][a-z0-9_.-]{0,63}$`)
	scopeIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// Account is one alias of a scope's (or the global set's): jobs that name
// Alias run as OSUser. Deny forbids the alias in the scope even when the
// global set has it.
type Account struct {
	// Scope is "biz:<id>", "biz_set:<id>", or "" for the global set.
	Scope  string `json:"scope"`
	Alias  string `json:"alias"`
	OSUser string `json:"os_user,omitempty"`
	Deny   bool   `json:"deny,omitempty"`
	// BKAccountID is the id BlueKing clients name this account by
	// (account_id), unique within its set; 0 is none. A BlueKing request
	// that names only an account_id runs as the alias holding that id, and
	// an id no alias holds refuses the job.
	BKAccountID int64 `json:"bk_account_id,omitempty"`
	// UpdatedAt and By say who set it last.
	UpdatedAt time.Time `json:"updated_at"`
	By        string    `json:"by,omitempty"`
}

// ValidAccountAlias reports why alias cannot name an account, or nil.
func ValidAccountAlias(alias string) error {
	if !aliasPattern.MatchString(alias) {
		return fmt.Errorf("%q is not an account alias: want 1 to 64 of a-z 0-9 _ . -, starting with a-z or _", alias)
	}
	return nil
}

// ValidOSUser reports why name cannot be an OS account name, or nil.
func ValidOSUser(name string) error {
	if !accountName.MatchString(name) || len(name) > 32 {
		return fmt.Errorf("%q is not an OS user name", name)
	}
	return nil
}

// AccountScope reads the scope of an account set: "" (or "global") is the
// global set; otherwise "biz:<id>" or "biz_set:<id>" with an id of
// A-Z a-z 0-9 _ -. It returns the canonical spelling.
func AccountScope(s string) (string, error) {
	if s == "" || s == accountKeyGlobal {
		return "", nil
	}
	sc, err := ParseScope(s)
	if err != nil {
		return "", err
	}
	if !scopeIDPattern.MatchString(sc.ID) {
		return "", fmt.Errorf("%q is not a scope: its id must be 1 to 64 of A-Z a-z 0-9 _ -", s)
	}
	return sc.String(), nil
}

// AccountKeyPrefix is the key token of a scope's set ("" is the global
// set): ':' becomes '=', which KV keys allow and scope types never hold.
func AccountKeyPrefix(scope string) string {
	if scope == "" {
		return accountKeyGlobal
	}
	return strings.Replace(scope, ":", "=", 1)
}

// AccountKey is the accounts-bucket key of an alias in a scope's set.
func AccountKey(scope, alias string) string { return AccountKeyPrefix(scope) + "." + alias }
