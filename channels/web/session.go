package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
)

// Agent tokens are "kfa_" and 43 base64url characters (32 random bytes).
// The store keeps only their SHA-256, so a leaked database holds no usable
// token.
const agentTokenPrefix = "kfa_"

// errUnauthorized is the answer to a missing, malformed, expired or revoked
// token (401).
var errUnauthorized = &httpx.RequestError{Status: http.StatusUnauthorized, Code: httpx.CodeUnauthorized, Msg: "missing, expired or revoked token"}

// newAgentToken returns a fresh token and the hash to store.
func newAgentToken() (token, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	token = agentTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return token, hashToken(token), nil
}

// hashToken is how a token is looked up in the store.
func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// authenticateAgent returns the active agent a token belongs to, or
// errUnauthorized. Every transport and the REST API authenticate agents
// through it.
func (c *Channel) authenticateAgent(ctx context.Context, token string) (core.Agent, core.Session, error) {
	if !strings.HasPrefix(token, agentTokenPrefix) || len(token) != len(agentTokenPrefix)+43 {
		return core.Agent{}, core.Session{}, errUnauthorized
	}
	s, err := c.store.Session(ctx, hashToken(token))
	if errors.Is(err, core.ErrNotFound) {
		return core.Agent{}, s, errUnauthorized
	}
	if err != nil {
		return core.Agent{}, s, err
	}
	if !c.now().Before(s.ExpiresAt) {
		return core.Agent{}, s, errUnauthorized
	}
	a, err := c.store.Agent(ctx, s.AgentID)
	if errors.Is(err, core.ErrNotFound) || (err == nil && !a.Active) {
		return core.Agent{}, s, errUnauthorized
	}
	return a, s, err
}

// bearerToken returns the token of an "Authorization: Bearer …" header.
func bearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

type agentKey struct{}

// withAgent returns ctx carrying the authenticated agent.
func withAgent(ctx context.Context, a core.Agent) context.Context {
	return context.WithValue(ctx, agentKey{}, a)
}

// agentFrom returns the authenticated agent in ctx.
func agentFrom(ctx context.Context) (core.Agent, bool) {
	a, ok := ctx.Value(agentKey{}).(core.Agent)
	return a, ok
}
