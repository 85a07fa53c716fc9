package tokens

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/drover-ci/drover"
)

func TestNewParseVerify(t *testing.T) {
	now := time.Now()
	secret, tok, err := Hasher{Cost: FastCost}.New(drover.TokenAPI, now)
	if err != nil {
		t.Fatal(err)
	}
	if cost, err := bcrypt.Cost([]byte(tok.Hash)); err != nil || cost != FastCost {
		t.Errorf("hash cost = %d, %v; want %d", cost, err, FastCost)
	}
	if strings.Contains(tok.Hash, strings.Split(secret, "_")[3]) {
		t.Fatal("the stored hash contains the secret")
	}
	kind, id, s, err := Parse(secret)
	if err != nil || kind != drover.TokenAPI || id != tok.ID {
		t.Fatalf("Parse = %s %s, %v", kind, id, err)
	}
	if err := Verify(&tok, s, now); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if err := Verify(&tok, s+"x", now); drover.KindOf(err) != drover.Unauthorized {
		t.Errorf("Verify of a wrong secret = %v", err)
	}
	expired := tok
	expired.Expires = now.Add(-time.Second)
	revoked := tok
	revoked.Revoked = true
	used := tok
	used.UsesLeft = 0
	for name, tk := range map[string]drover.Token{"expired": expired, "revoked": revoked, "used up": used} {
		if err := Verify(&tk, s, now); drover.KindOf(err) != drover.Unauthorized {
			t.Errorf("%s token verified: %v", name, err)
		}
	}
}

func TestRedact(t *testing.T) {
	secret, _, err := Hasher{Cost: FastCost}.New(drover.TokenWorker, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, id, s, _ := Parse(secret)
	for _, got := range []string{Redact(secret), RedactAll("token=" + secret + " and more")} {
		if strings.Contains(got, s) || !strings.Contains(got, id) {
			t.Errorf("redacted %q", got)
		}
	}
	if got := Redact("hunter2"); strings.Contains(got, "hunter2") {
		t.Errorf("Redact echoed a malformed secret: %q", got)
	}
}

// The zero Hasher, which the drover binary uses, hashes at bcrypt's
// default cost.
func TestDefaultCost(t *testing.T) {
	_, tok, err := New(drover.TokenAPI, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if cost, err := bcrypt.Cost([]byte(tok.Hash)); err != nil || cost != bcrypt.DefaultCost {
		t.Errorf("hash cost = %d, %v; want bcrypt's default %d", cost, err, bcrypt.DefaultCost)
	}
}

func TestCache(t *testing.T) {
	c := NewCache(time.Minute)
	now := time.Now()
	c.Put("tok", drover.Token{ID: "x", Role: drover.RoleAdmin}, now)
	if got, ok := c.Get("tok", now.Add(30*time.Second)); !ok || got.Role != drover.RoleAdmin {
		t.Error("fresh entry missing")
	}
	if _, ok := c.Get("tok", now.Add(2*time.Minute)); ok {
		t.Error("stale entry returned")
	}
	if _, ok := c.Get("other", now); ok {
		t.Error("unknown token returned")
	}
}

// FuzzParse: any string is either a well-formed token or refused, without
// echoing the input in the error.
func FuzzParse(f *testing.F) {
	f.Add("drover_api_0123456789ab_c2VjcmV0")
	f.Add("drover_worker__x")
	f.Add("hunter2")
	f.Add("drover_enroll_a_b_c_d")
	f.Fuzz(func(t *testing.T, s string) {
		kind, id, secret, err := Parse(s)
		if err != nil {
			if len(s) > 8 && strings.Contains(err.Error(), s) {
				t.Errorf("error echoes the input: %v", err)
			}
			return
		}
		if id == "" || secret == "" || s != Prefix+string(kind)+"_"+id+"_"+secret {
			t.Errorf("Parse(%q) = %q %q %q", s, kind, id, secret)
		}
	})
}
