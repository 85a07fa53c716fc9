package mastertest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/store"
	"github.com/drover-ci/drover/internal/tokens"
	"golang.org/x/crypto/bcrypt"
)

// Cred is how a simulated worker authenticates: its own token, or an
// enrollment token it trades for one on first connect.
type Cred struct {
	Name   string `json:"name"`
	Token  string `json:"token,omitempty"`
	Enroll string `json:"enroll,omitempty"`
}

// EnrollCreds makes one enrollment token in st and n credentials that
// enroll with it: the path a real worker takes, bcrypt and all.
func EnrollCreds(ctx context.Context, st store.Store, prefix string, n int) ([]Cred, error) {
	secret, t, err := tokens.New(drover.TokenEnroll, time.Now())
	if err != nil {
		return nil, err
	}
	t.Comment = "mastertest"
	if err := st.AddToken(ctx, &t); err != nil {
		return nil, fmt.Errorf("add enrollment token: %w", err)
	}
	out := make([]Cred, n)
	for i := range out {
		out[i] = Cred{Name: fmt.Sprintf("%s-%05d", prefix, i), Enroll: secret}
	}
	return out, nil
}

// ProvisionCreds stores n worker tokens directly, sharing one secret
// hashed at bcrypt's minimum cost. Enrolling thousands of workers costs
// three bcrypt runs each at the default cost (about 0.2 s of CPU per
// worker here), which would measure bcrypt, not the master; the connect
// scenario measures that cost separately on a sample.
func ProvisionCreds(ctx context.Context, st store.Store, prefix string, n int) ([]Cred, error) {
	sb := make([]byte, 32)
	if _, err := rand.Read(sb); err != nil {
		return nil, fmt.Errorf("make secret: %w", err)
	}
	secret := base64.RawURLEncoding.EncodeToString(sb)
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.MinCost)
	if err != nil {
		return nil, fmt.Errorf("hash secret: %w", err)
	}
	idb := make([]byte, 4)
	if _, err := rand.Read(idb); err != nil {
		return nil, fmt.Errorf("make token id: %w", err)
	}
	now := time.Now().UTC()
	out := make([]Cred, n)
	for i := range out {
		id := fmt.Sprintf("%x%06x", idb, i)
		name := fmt.Sprintf("%s-%05d", prefix, i)
		t := drover.Token{ID: id, Kind: drover.TokenWorker, Hash: string(hash), Worker: name, Comment: "mastertest", Created: now, UsesLeft: -1}
		if err := st.AddToken(ctx, &t); err != nil {
			return nil, fmt.Errorf("add worker token %d: %w", i, err)
		}
		out[i] = Cred{Name: name, Token: fmt.Sprintf("%s%s_%s_%s", tokens.Prefix, drover.TokenWorker, id, secret)}
	}
	return out, nil
}

// Creds gives n workers credentials: real enrollment for small fleets,
// provisioned tokens for large ones.
func Creds(ctx context.Context, st store.Store, prefix string, n int) ([]Cred, error) {
	if n <= enrollLimit {
		return EnrollCreds(ctx, st, prefix, n)
	}
	return ProvisionCreds(ctx, st, prefix, n)
}

// enrollLimit is the largest fleet that enrolls for real; see
// ProvisionCreds.
const enrollLimit = 10
