// Package tokens makes and checks Drover's secret tokens: API tokens,
// worker enrollment tokens and workers' own secrets.
//
// A token reads "drover_<kind>_<id>_<secret>". The id is public and finds
// the stored row; only a bcrypt hash of the secret is stored, so a leaked
// database does not leak credentials. The prefix lets secret scanners spot
// a token pasted where it should not be, and lets log redaction find it.
package tokens

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/drover-ci/drover"
)

// Prefix starts every token.
const Prefix = "drover_"

// Hasher makes tokens, hashing their secrets with bcrypt at Cost. The
// zero Hasher uses bcrypt's default cost, which the drover binary always
// uses: checks happen at worker connect and, for API tokens, once per
// cache period, not per request. Tests use FastCost, bcrypt's minimum:
// under the race detector each default-cost hash takes a second or more,
// and what they check is the logic, not the cost.
type Hasher struct {
	Cost int
}

// FastCost is bcrypt's minimum cost, for tests and benchmarks.
const FastCost = bcrypt.MinCost

// New makes a token of kind k at bcrypt's default cost (see Hasher.New).
func New(k drover.TokenKind, now time.Time) (secret string, t drover.Token, err error) {
	return Hasher{}.New(k, now)
}

// New makes a token of kind k: the full secret string to hand out once, and
// the drover.Token (ID, Kind, Hash, Created) to store.
func (h Hasher) New(k drover.TokenKind, now time.Time) (secret string, t drover.Token, err error) {
	idb := make([]byte, 6)
	sb := make([]byte, 32)
	if _, err := rand.Read(idb); err != nil {
		return "", t, fmt.Errorf("make token: %w", err)
	}
	if _, err := rand.Read(sb); err != nil {
		return "", t, fmt.Errorf("make token: %w", err)
	}
	id := hex.EncodeToString(idb)
	s := base64.RawURLEncoding.EncodeToString(sb)
	hash, err := bcrypt.GenerateFromPassword([]byte(s), h.cost())
	if err != nil {
		return "", t, fmt.Errorf("hash token: %w", err)
	}
	t = drover.Token{ID: id, Kind: k, Hash: string(hash), Created: now.UTC(), UsesLeft: -1}
	return fmt.Sprintf("%s%s_%s_%s", Prefix, k, id, s), t, nil
}

func (h Hasher) cost() int {
	if h.Cost == 0 {
		return bcrypt.DefaultCost
	}
	return h.Cost
}

// Parse splits a token into its kind, id and secret. It fails with
// Unauthorized for anything that is not a well-formed token, without
// echoing the input (it may be a secret pasted in the wrong place).
func Parse(token string) (drover.TokenKind, string, string, error) {
	rest, ok := strings.CutPrefix(token, Prefix)
	if !ok {
		return "", "", "", drover.Errorf(drover.Unauthorized, "malformed token")
	}
	parts := strings.SplitN(rest, "_", 3)
	if len(parts) != 3 || parts[1] == "" || parts[2] == "" {
		return "", "", "", drover.Errorf(drover.Unauthorized, "malformed token")
	}
	k := drover.TokenKind(parts[0])
	switch k {
	case drover.TokenAPI, drover.TokenEnroll, drover.TokenWorker:
	default:
		return "", "", "", drover.Errorf(drover.Unauthorized, "malformed token")
	}
	return k, parts[1], parts[2], nil
}

// Verify checks secret against stored token t: its hash, that it is not
// revoked or expired at now, and that it has uses left. It does not use
// the token up; the store does that in the same transaction as the action.
func Verify(t *drover.Token, secret string, now time.Time) error {
	if err := bcrypt.CompareHashAndPassword([]byte(t.Hash), []byte(secret)); err != nil {
		return drover.Errorf(drover.Unauthorized, "token %s: wrong secret", t.ID)
	}
	return Usable(t, now)
}

// Usable checks that t is neither revoked, expired, nor used up.
func Usable(t *drover.Token, now time.Time) error {
	switch {
	case t.Revoked:
		return drover.Errorf(drover.Unauthorized, "token %s is revoked", t.ID)
	case !t.Expires.IsZero() && !now.Before(t.Expires):
		return drover.Errorf(drover.Unauthorized, "token %s expired at %s", t.ID, t.Expires.Format(time.RFC3339))
	case t.UsesLeft == 0:
		return drover.Errorf(drover.Unauthorized, "token %s has no uses left", t.ID)
	}
	return nil
}

// Redact shortens a token for logs: its kind and id, never its secret.
func Redact(token string) string {
	k, id, _, err := Parse(token)
	if err != nil {
		return "(malformed token)"
	}
	return fmt.Sprintf("%s%s_%s_…", Prefix, k, id)
}

var tokenPattern = regexp.MustCompile(Prefix + `(api|enroll|worker)_([0-9a-f]+)_[A-Za-z0-9_-]+`)

// RedactAll replaces every token in s by its redacted form, for text that
// may echo a secret (command lines, error messages).
func RedactAll(s string) string {
	return tokenPattern.ReplaceAllString(s, Prefix+"${1}_${2}_…")
}

// Cache remembers recently verified tokens so that an API client does not
// pay a bcrypt check per request. Entries are keyed by a SHA-256 of the
// whole token and live for ttl; a revoked token stops working within ttl.
type Cache struct {
	ttl time.Duration

	mu      sync.Mutex
	entries map[[32]byte]cacheEntry
}

type cacheEntry struct {
	token drover.Token
	until time.Time
}

// NewCache makes a cache whose entries live for ttl.
func NewCache(ttl time.Duration) *Cache {
	return &Cache{ttl: ttl, entries: make(map[[32]byte]cacheEntry)}
}

// Get returns the stored token verified for secret token within ttl.
func (c *Cache) Get(token string, now time.Time) (drover.Token, bool) {
	key := sha256.Sum256([]byte(token))
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || now.After(e.until) {
		delete(c.entries, key)
		return drover.Token{}, false
	}
	return e.token, true
}

// Put records that token verified as t at now.
func (c *Cache) Put(token string, t drover.Token, now time.Time) {
	key := sha256.Sum256([]byte(token))
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) > 10000 { // bound memory against a flood of distinct valid tokens
		clear(c.entries)
	}
	c.entries[key] = cacheEntry{token: t, until: now.Add(c.ttl)}
}
