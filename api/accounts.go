package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
)

// Execution accounts. Every account a job names (a script step's user, a
// file source's account, a file step's destination account) is an alias
// that resolves, before anything is queued, through the aliases of the
// job's scope and then the global set; what reaches agents is the OS
// user. An alias the scope denies, or that neither set has, refuses the
// job (400 in each surface's envelope). A step that names no account runs
// as schemas.DefaultAccountAlias, resolved the same way.

// AccountStore keeps the account aliases.
type AccountStore interface {
	// Account returns the alias of one set ("" is the global set).
	Account(scope, alias string) (schemas.Account, bool)
	// Accounts lists one set's aliases, or every set's when all is true.
	Accounts(ctx context.Context, scope string, all bool) ([]schemas.Account, error)
	PutAccount(ctx context.Context, a schemas.Account) error
	// DeleteAccount removes an alias; schemas.ErrNotFound when absent.
	DeleteAccount(ctx context.Context, scope, alias string) error
	// AccountByBKID returns the alias of one set holding a BlueKing
	// account id.
	AccountByBKID(scope string, id int64) (schemas.Account, bool)
}

// defaultAccounts is what a system with a nil AccountStore resolves
// against: the global alias root → root, as a fresh accounts bucket is
// seeded (see SeedAccounts).
var defaultAccounts = map[string]schemas.Account{
	schemas.AccountKey("", schemas.DefaultAccountAlias): {Alias: schemas.DefaultAccountAlias, OSUser: "root"},
}

// account looks an alias up in one set.
func (c *Core) account(scope, alias string) (schemas.Account, bool) {
	if c.deps.Accounts == nil {
		a, ok := defaultAccounts[schemas.AccountKey(scope, alias)]
		return a, ok
	}
	return c.deps.Accounts.Account(scope, alias)
}

// ResolveAccount resolves an alias for a job of scope (empty: no scope):
// the scope's own set first, then the global set. An empty alias is
// schemas.DefaultAccountAlias. field names the request field in errors.
func (c *Core) ResolveAccount(scope, alias, field string) (osUser string, err error) {
	if alias == "" {
		alias = schemas.DefaultAccountAlias
	}
	if err := schemas.ValidAccountAlias(alias); err != nil {
		return "", schemas.Invalid(field, "%v", err)
	}
	where := "the global account set"
	if scope != "" {
		where = "scope " + scope
		if a, ok := c.account(scope, alias); ok {
			if a.Deny {
				return "", schemas.Invalid(field, "account alias %q is forbidden in %s", alias, where)
			}
			return a.OSUser, nil
		}
	}
	if a, ok := c.account("", alias); ok && !a.Deny {
		return a.OSUser, nil
	}
	return "", schemas.Invalid(field, "unknown account alias %q in %s: an admin registers aliases with PUT /v1/accounts/{scope}/{alias}", alias, where)
}

// AliasOfBKAccount answers the alias a BlueKing account_id names for a
// job of scope: the scope's set first, then the global set, as aliases
// resolve. An id no alias holds, or that the scope denies, is an error on
// field.
func (c *Core) AliasOfBKAccount(scope string, id int64, field string) (string, error) {
	byID := func(set string) (schemas.Account, bool) {
		if c.deps.Accounts == nil {
			return schemas.Account{}, false
		}
		return c.deps.Accounts.AccountByBKID(set, id)
	}
	if scope != "" {
		if a, ok := byID(scope); ok {
			if a.Deny {
				return "", schemas.Invalid(field, "account_id %d (alias %q) is forbidden in scope %s", id, a.Alias, scope)
			}
			return a.Alias, nil
		}
	}
	if a, ok := byID(""); ok {
		return a.Alias, nil
	}
	return "", schemas.Invalid(field, "account_id %d names no account in %s: an admin gives an alias its BlueKing id with PUT /v1/accounts/{scope}/{alias} {\"bk_account_id\": %d}", id, setName(scope), id)
}

// resolveAccounts rewrites every account of a normalized spec from the
// alias the client named to its OS user, keeping the alias beside it.
func (c *Core) resolveAccounts(spec *schemas.JobSpec) error {
	scope := ""
	if spec.Scope != nil {
		scope = spec.Scope.String()
	}
	var fe schemas.FieldErrors
	resolve := func(alias *string, keep *string, field string) {
		name := cmp.Or(*alias, schemas.DefaultAccountAlias)
		u, err := c.ResolveAccount(scope, name, field)
		var bad schemas.FieldErrors
		switch {
		case errors.As(err, &bad):
			fe = append(fe, bad...)
		case err != nil:
			fe.Add(field, "%v", err)
		default:
			*alias, *keep = u, name
		}
	}
	for i := range spec.Steps {
		st := &spec.Steps[i]
		p := fmt.Sprintf("steps[%d]", i)
		if st.Script != nil {
			resolve(&st.Script.User, &st.Script.UserAlias, p+".script.user")
		}
		if f := st.File; f != nil {
			resolve(&f.Owner, &f.OwnerAlias, p+".file.owner")
			for j := range f.Sources {
				// (an artifact source's account is unused: targets read it
				// from the store; it resolves all the same)
				resolve(&f.Sources[j].Account, &f.Sources[j].AccountAlias, fmt.Sprintf("%s.file.sources[%d].account", p, j))
			}
		}
	}
	return fe.Err()
}

// PutAccount registers (or replaces) an alias; by is the admin who did.
func (c *Core) PutAccount(ctx context.Context, a schemas.Account, by string) (schemas.Account, error) {
	var fe schemas.FieldErrors
	scope, err := schemas.AccountScope(a.Scope)
	if err != nil {
		fe.Add("scope", "%v", err)
	}
	if err := schemas.ValidAccountAlias(a.Alias); err != nil {
		fe.Add("alias", "%v", err)
	}
	switch {
	case a.Deny && a.OSUser != "":
		fe.Add("os_user", "a denied alias has no OS user")
	case a.Deny && scope == "":
		fe.Add("deny", "only a scope denies an alias; delete a global alias instead")
	case !a.Deny:
		if err := schemas.ValidOSUser(a.OSUser); err != nil {
			fe.Add("os_user", "%v", err)
		}
	}
	if a.BKAccountID < 0 {
		fe.Add("bk_account_id", "must be positive")
	}
	if err := fe.Err(); err != nil {
		return schemas.Account{}, err
	}
	if c.deps.Accounts == nil {
		return schemas.Account{}, schemas.Unavailable(nil, "no account store")
	}
	if a.BKAccountID > 0 {
		if o, ok := c.deps.Accounts.AccountByBKID(scope, a.BKAccountID); ok && o.Alias != a.Alias {
			return schemas.Account{}, schemas.Invalid("bk_account_id", "alias %q of %s already holds BlueKing account id %d", o.Alias, setName(scope), a.BKAccountID)
		}
	}
	a.Scope, a.By, a.UpdatedAt = scope, by, time.Now().UTC()
	return a, c.deps.Accounts.PutAccount(ctx, a)
}

// Accounts lists the aliases of one set (scope "global" or "" with all
// false is the global set) or of every set.
func (c *Core) Accounts(ctx context.Context, scope string, all bool) ([]schemas.Account, error) {
	sc, err := schemas.AccountScope(scope)
	if err != nil {
		return nil, schemas.Invalid("scope", "%v", err)
	}
	if c.deps.Accounts == nil {
		var out []schemas.Account
		for _, a := range defaultAccounts {
			out = append(out, a)
		}
		return out, nil
	}
	return c.deps.Accounts.Accounts(ctx, sc, all)
}

// DeleteAccount removes an alias from a set.
func (c *Core) DeleteAccount(ctx context.Context, scope, alias string) error {
	sc, err := schemas.AccountScope(scope)
	if err != nil {
		return schemas.Invalid("scope", "%v", err)
	}
	if err := schemas.ValidAccountAlias(alias); err != nil {
		return schemas.Invalid("alias", "%v", err)
	}
	if c.deps.Accounts == nil {
		return schemas.Unavailable(nil, "no account store")
	}
	return c.deps.Accounts.DeleteAccount(ctx, sc, alias)
}

// KVAccounts keeps the aliases in the accounts bucket and serves lookups
// from memory, kept current by a watch of the bucket (so a submission
// costs no round trip); its own writes apply at once.
type KVAccounts struct {
	kv jetstream.KeyValue

	mu  sync.RWMutex
	all map[string]schemas.Account // by key
}

// NewKVAccounts loads the bucket and watches it until ctx ends.
func NewKVAccounts(ctx context.Context, kv jetstream.KeyValue) (*KVAccounts, error) {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch accounts: %w", err)
	}
	k := &KVAccounts{kv: kv, all: map[string]schemas.Account{}}
	if err := follow(ctx, w, "accounts", k.apply); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *KVAccounts) apply(e jetstream.KeyValueEntry) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(k.all, e.Key())
		return
	}
	var a schemas.Account
	if json.Unmarshal(e.Value(), &a) == nil && a.Alias != "" {
		k.all[e.Key()] = a
	}
}

// Account implements AccountStore.
func (k *KVAccounts) Account(scope, alias string) (schemas.Account, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	a, ok := k.all[schemas.AccountKey(scope, alias)]
	return a, ok
}

// AccountByBKID implements AccountStore.
func (k *KVAccounts) AccountByBKID(scope string, id int64) (schemas.Account, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	for _, a := range k.all {
		if a.Scope == scope && a.BKAccountID == id {
			return a, true
		}
	}
	return schemas.Account{}, false
}

// Accounts implements AccountStore, sorted by scope and alias.
func (k *KVAccounts) Accounts(_ context.Context, scope string, all bool) ([]schemas.Account, error) {
	k.mu.RLock()
	out := []schemas.Account{}
	for _, a := range k.all {
		if all || a.Scope == scope {
			out = append(out, a)
		}
	}
	k.mu.RUnlock()
	slices.SortFunc(out, func(a, b schemas.Account) int {
		if c := strings.Compare(a.Scope, b.Scope); c != 0 {
			return c
		}
		return strings.Compare(a.Alias, b.Alias)
	})
	return out, nil
}

// PutAccount implements AccountStore.
func (k *KVAccounts) PutAccount(ctx context.Context, a schemas.Account) error {
	b, _ := json.Marshal(a)
	key := schemas.AccountKey(a.Scope, a.Alias)
	if _, err := k.kv.Put(ctx, key, b); err != nil {
		return schemas.Unavailable(err, "store account %s", key)
	}
	k.mu.Lock()
	k.all[key] = a
	k.mu.Unlock()
	return nil
}

// DeleteAccount implements AccountStore.
func (k *KVAccounts) DeleteAccount(ctx context.Context, scope, alias string) error {
	key := schemas.AccountKey(scope, alias)
	if _, ok := k.Account(scope, alias); !ok {
		return schemas.NotFound("no account alias %q in %s", alias, setName(scope))
	}
	if err := k.kv.Delete(ctx, key); err != nil {
		return schemas.Unavailable(err, "delete account %s", key)
	}
	k.mu.Lock()
	delete(k.all, key)
	k.mu.Unlock()
	return nil
}

func setName(scope string) string {
	if scope == "" {
		return "the global set"
	}
	return "scope " + scope
}

// seededKey marks an accounts bucket that has had its defaults: an admin
// who deletes a default alias does not see it come back.
const seededKey = "seeded"

// SeedAccounts gives a new accounts bucket its defaults, once per system:
// the global alias root → root, so jobs that name no account (and
// BlueKing's usual alias "root") run as before until an admin says
// otherwise.
func SeedAccounts(ctx context.Context, kv jetstream.KeyValue) error {
	_, err := kv.Create(ctx, seededKey, []byte(time.Now().UTC().Format(time.RFC3339)))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("seed accounts: %w", err)
	}
	a := defaultAccounts[schemas.AccountKey("", schemas.DefaultAccountAlias)]
	a.UpdatedAt, a.By = time.Now().UTC(), "default"
	b, _ := json.Marshal(a)
	if _, err := kv.Create(ctx, schemas.AccountKey("", a.Alias), b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("seed accounts: %w", err)
	}
	return nil
}
