package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
)

// Role is what an identity may do. Roles are ordered: each may do what
// the ones below it may.
type Role string

// Roles.
const (
	// RoleViewer reads jobs, logs and agents within its scopes.
	RoleViewer Role = "viewer"
	// RoleOperator also runs, stops and operates jobs within its scopes.
	RoleOperator Role = "operator"
	// RoleAdmin may do everything, in every scope, and manages identities.
	RoleAdmin Role = "admin"
)

func (r Role) rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// ParseRole reads a role name.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if r.rank() == 0 {
		return "", fmt.Errorf("%q is not a role: want admin, operator or viewer", s)
	}
	return r, nil
}

// CredentialKind is how a credential is presented.
type CredentialKind string

// Kinds of credential. Only bearer and bk_app are issued today; the record
// is shaped for the others (the container service's access keys, the
// DataHub daemon's Token) so they need no new store.
const (
	KindBearer      CredentialKind = "bearer"       // Authorization: Bearer <token>
	KindBKApp       CredentialKind = "bk_app"       // bk_app_code + bk_app_secret
	KindAccessKey   CredentialKind = "access_key"   // access key id + a signing secret (later)
	KindDaemonToken CredentialKind = "daemon_token" // DataHub's Token header (later)
	// KindAdminToken is the configured admin token (not stored).
	KindAdminToken CredentialKind = "admin_token"
	// KindNetwork is a request admitted by its source network (octans).
	KindNetwork CredentialKind = "network"
)

// Credential is one record of the identities bucket: something a caller
// presents, the identity it stands for (Owner), and what that identity may
// do (Role within Scopes). Secrets are never stored: SecretHash is the
// hex SHA-256 of the secret. A plain hash is right here, unlike for
// passwords: every secret is 32 random bytes made by the server, so there
// is nothing to guess and a slow hash (bcrypt) would only cost every
// request tens of milliseconds. An access key that signs requests (HMAC)
// needs its secret itself; it will keep it sealed, in a field of its own.
type Credential struct {
	// ID names the credential in lists and revocations; it is not secret.
	ID   string         `json:"id"`
	Kind CredentialKind `json:"kind"`
	// Owner is the identity: a user name, or the app code of a BlueKing app.
	Owner  string          `json:"owner"`
	Role   Role            `json:"role"`
	Scopes []schemas.Scope `json:"scopes,omitempty"`
	// SecretHash is the hex SHA-256 of the secret.
	SecretHash string `json:"secret_hash"`
	// TrustedUserAssertion lets a BlueKing app act as the bk_username it
	// names (as BlueKing's gateway lets apps exempted from user auth).
	TrustedUserAssertion bool       `json:"trusted_user_assertion,omitempty"`
	Description          string     `json:"description,omitempty"`
	CreatedAt            time.Time  `json:"created_at"`
	CreatedBy            string     `json:"created_by"`
	ExpiresAt            *time.Time `json:"expires_at,omitempty"` // when it stops opening anything; nil: never
	RevokedAt            *time.Time `json:"revoked_at,omitempty"`
	RevokedBy            string     `json:"revoked_by,omitempty"`
}

// CredentialView is a credential as the API lists it: without its hash.
type CredentialView struct {
	ID                   string         `json:"id"`
	Kind                 CredentialKind `json:"kind"`
	Owner                string         `json:"owner"`
	Role                 Role           `json:"role"`
	Scopes               []string       `json:"scopes"`
	TrustedUserAssertion bool           `json:"trusted_user_assertion,omitempty"`
	Description          string         `json:"description,omitempty"`
	CreatedAt            time.Time      `json:"created_at"`
	CreatedBy            string         `json:"created_by"`
	ExpiresAt            *time.Time     `json:"expires_at,omitempty"`
	RevokedAt            *time.Time     `json:"revoked_at,omitempty"`
	RevokedBy            string         `json:"revoked_by,omitempty"`
}

// View is the credential without its secret hash.
func (c Credential) View() CredentialView {
	return CredentialView{ID: c.ID, Kind: c.Kind, Owner: c.Owner, Role: c.Role, Scopes: ScopeStrings(c.Scopes),
		TrustedUserAssertion: c.TrustedUserAssertion, Description: c.Description,
		CreatedAt: c.CreatedAt, CreatedBy: c.CreatedBy, ExpiresAt: c.ExpiresAt, RevokedAt: c.RevokedAt, RevokedBy: c.RevokedBy}
}

// Expired reports whether the credential has expired at now.
func (c Credential) Expired(now time.Time) bool {
	return c.ExpiresAt != nil && !now.Before(*c.ExpiresAt)
}

// ScopeStrings writes scopes as "biz:2".
func ScopeStrings(scs []schemas.Scope) []string {
	out := make([]string, 0, len(scs))
	for _, s := range scs {
		out = append(out, s.String())
	}
	return out
}

// ParseScopes reads "biz:2" scopes; field names the errors.
func ParseScopes(field string, in []string) ([]schemas.Scope, error) {
	var fe schemas.FieldErrors
	var out []schemas.Scope
	for i, s := range in {
		sc, err := schemas.ParseScope(strings.TrimSpace(s))
		if err != nil {
			fe.Add(fmt.Sprintf("%s[%d]", field, i), "%v", err)
			continue
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return out, fe.Err()
}

// ErrForbidden refuses what the caller's role does not allow (HTTP 403 on
// the native API). What lies outside the caller's scopes is not forbidden
// but not found.
var ErrForbidden = errors.New("forbidden")

// Forbidden is ErrForbidden with a reason.
func Forbidden(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrForbidden)
}

// IdentityStore keeps credentials in the identities bucket. Keys are
// "<kind>.<id>": a bearer token's id is the first 16 hex digits of its
// hash, so a request finds its record with one KV get and no index; a
// BlueKing app's id is its app code.
//
// There is no cache: every request with a stored credential reads its
// record, so a revocation holds on the very next request on every API
// process (a KV get on the request path costs about 0.1 ms on a local
// NATS; the admin token, which benchmarks use, needs none).
type IdentityStore struct{ KV jetstream.KeyValue }

// ErrNoCredential is a credential the store does not hold, or holds
// revoked or expired: the caller is unauthenticated.
var ErrNoCredential = fmt.Errorf("unknown, revoked or expired credential: %w", ErrUnauthorized)

var (
	appCodePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	ownerPattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$`)
	tokenIDPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)
)

// tokenPrefix marks fleetjob tokens, so secret scanners can find leaked ones.
const tokenPrefix = "fjt_"

// NewSecret makes a random secret: 32 bytes from crypto/rand.
func NewSecret() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // the OS has no randomness: nothing is safe
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// HashSecret is the hex SHA-256 of a secret.
func HashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

func key(kind CredentialKind, id string) string { return string(kind) + "." + id }

// NewCredential is what an admin asks for.
type NewCredential struct {
	Kind                 CredentialKind
	Owner                string
	Role                 Role
	Scopes               []schemas.Scope
	TrustedUserAssertion bool
	Description          string
	CreatedBy            string
	// AppCode is a BlueKing app's code (its id).
	AppCode string
	// TTL (Go duration syntax, "720h") or ExpiresAt, not both, make the
	// credential expire; with neither it does not.
	TTL       string
	ExpiresAt *time.Time
}

// MaxCredentialTTL is the longest a credential may be made to last with an
// expiry; without one it lasts until revoked.
const MaxCredentialTTL = 10 * 366 * 24 * time.Hour

// expiry is when a credential asked for at now expires: nil for never.
func (n NewCredential) expiry(now time.Time, fe *schemas.FieldErrors) *time.Time {
	switch {
	case n.TTL != "" && n.ExpiresAt != nil:
		fe.Add("ttl", "give ttl or expires_at, not both")
	case n.TTL != "":
		d, err := time.ParseDuration(n.TTL)
		if err != nil || d < time.Second || d > MaxCredentialTTL {
			fe.Add("ttl", "%q: want a duration from 1s to %s, like 720h", n.TTL, MaxCredentialTTL)
			return nil
		}
		at := now.Add(d).UTC().Truncate(time.Millisecond)
		return &at
	case n.ExpiresAt != nil:
		if !n.ExpiresAt.After(now) || n.ExpiresAt.Sub(now) > MaxCredentialTTL {
			fe.Add("expires_at", "%s: want a time in the next %s", n.ExpiresAt.Format(time.RFC3339), MaxCredentialTTL)
			return nil
		}
		at := n.ExpiresAt.UTC()
		return &at
	}
	return nil
}

// Create stores a new credential, made at now, and returns it with its
// secret, which is never shown again. A BlueKing app code can be taken
// once (revoke and create again to rotate its secret under a new code).
func (s IdentityStore) Create(ctx context.Context, n NewCredential, now time.Time) (Credential, string, error) {
	var fe schemas.FieldErrors
	if n.Role.rank() == 0 {
		fe.Add("role", "want admin, operator or viewer")
	}
	if n.Role != RoleAdmin && len(n.Scopes) == 0 {
		fe.Add("scopes", "an operator or viewer needs at least one scope (biz:<id> or biz_set:<id>)")
	}
	secret := NewSecret()
	hash := HashSecret(secret)
	cr := Credential{Kind: n.Kind, Owner: n.Owner, Role: n.Role, Scopes: n.Scopes, SecretHash: hash,
		Description: n.Description, CreatedAt: now.UTC(), CreatedBy: n.CreatedBy, ExpiresAt: n.expiry(now, &fe)}
	switch n.Kind {
	case KindBearer:
		cr.ID = hash[:16]
		if !ownerPattern.MatchString(n.Owner) {
			fe.Add("user", "want 1 to 128 letters, digits, '.', '_', '@' or '-'")
		}
	case KindBKApp:
		cr.ID, cr.Owner, cr.TrustedUserAssertion = n.AppCode, n.AppCode, n.TrustedUserAssertion
		if !appCodePattern.MatchString(n.AppCode) {
			fe.Add("bk_app_code", "want 1 to 64 letters, digits, '_' or '-'")
		}
	default:
		fe.Add("kind", "%q credentials cannot be issued yet", n.Kind)
	}
	if len(n.Description) > 256 {
		fe.Add("description", "longer than 256 characters")
	}
	if err := fe.Err(); err != nil {
		return Credential{}, "", err
	}
	b, _ := json.Marshal(cr)
	if _, err := s.KV.Create(ctx, key(cr.Kind, cr.ID), b); errors.Is(err, jetstream.ErrKeyExists) {
		return Credential{}, "", schemas.Conflict("%s %s already exists", cr.Kind, cr.ID)
	} else if err != nil {
		return Credential{}, "", schemas.Unavailable(err, "store credential")
	}
	return cr, secret, nil
}

// get reads one record; a missing one is ErrNoCredential.
func (s IdentityStore) get(ctx context.Context, kind CredentialKind, id string) (Credential, uint64, error) {
	e, err := s.KV.Get(ctx, key(kind, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Credential{}, 0, ErrNoCredential
	}
	if err != nil {
		return Credential{}, 0, schemas.Unavailable(err, "read credential")
	}
	var cr Credential
	if err := json.Unmarshal(e.Value(), &cr); err != nil {
		return Credential{}, 0, fmt.Errorf("credential %s: %w", e.Key(), err)
	}
	return cr, e.Revision(), nil
}

// Verify finds the live credential of kind that secret opens at now: for
// a bearer token the token alone, for a BlueKing app its code (id) and
// secret. The hash is compared in constant time. A revoked or expired
// credential is refused alike.
func (s IdentityStore) Verify(ctx context.Context, kind CredentialKind, id, secret string, now time.Time) (Credential, error) {
	hash := HashSecret(secret)
	if kind == KindBearer {
		id = hash[:16]
	}
	if id == "" || secret == "" || (kind == KindBKApp && !appCodePattern.MatchString(id)) {
		return Credential{}, ErrNoCredential
	}
	cr, _, err := s.get(ctx, kind, id)
	if err != nil {
		return Credential{}, err
	}
	if subtle.ConstantTimeCompare([]byte(cr.SecretHash), []byte(hash)) != 1 || cr.RevokedAt != nil || cr.Expired(now) {
		return Credential{}, ErrNoCredential
	}
	return cr, nil
}

// Revoke marks a credential revoked; revoking twice is not an error.
func (s IdentityStore) Revoke(ctx context.Context, kind CredentialKind, id, by string) (Credential, error) {
	if kind == KindBearer && !tokenIDPattern.MatchString(id) || kind == KindBKApp && !appCodePattern.MatchString(id) {
		return Credential{}, schemas.NotFound("no %s %q", kind, id)
	}
	for range 5 {
		cr, rev, err := s.get(ctx, kind, id)
		if errors.Is(err, ErrNoCredential) {
			return Credential{}, schemas.NotFound("no %s %q", kind, id)
		}
		if err != nil || cr.RevokedAt != nil {
			return cr, err
		}
		now := time.Now().UTC()
		cr.RevokedAt, cr.RevokedBy = &now, by
		b, _ := json.Marshal(cr)
		if _, err := s.KV.Update(ctx, key(kind, id), b, rev); err == nil {
			return cr, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return Credential{}, schemas.Unavailable(err, "revoke credential")
		}
	}
	return Credential{}, schemas.Conflict("the credential is being changed; try again")
}

// List returns every credential of kind, oldest first.
func (s IdentityStore) List(ctx context.Context, kind CredentialKind) ([]Credential, error) {
	lister, err := s.KV.ListKeysFiltered(ctx, string(kind)+".>")
	if err != nil {
		return nil, schemas.Unavailable(err, "list credentials")
	}
	var out []Credential
	seen := map[string]bool{}
	for k := range lister.Keys() {
		if seen[k] { // a listing may repeat a key written meanwhile
			continue
		}
		seen[k] = true
		id := strings.TrimPrefix(k, string(kind)+".")
		cr, _, err := s.get(ctx, kind, id)
		if errors.Is(err, ErrNoCredential) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, cr)
	}
	slices.SortFunc(out, func(a, b Credential) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}
