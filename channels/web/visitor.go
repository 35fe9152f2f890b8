package web

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
)

// Visitors.
//
// A visitor is an identity on this channel instance: "a:" and 32 hex digits
// (128 random bits) for an anonymous visitor, "u:" and the site's user id
// for a visitor whose identity the site's backend signed. The prefixes keep
// the two kinds from ever colliding.
//
// A visitor token is kefu's signature over (instance, identity, name,
// expiry): stateless, so any node of a cluster accepts it, and expiring
// after visitor_token_ttl. The client keeps it (localStorage) and presents
// it to resume. A token opens only its identity's conversations.

const (
	visitorTokenPrefix = "kfv_"
	anonPrefix         = "a:"
	verifiedPrefix     = "u:"
	// IdentitySignatureVersion starts the string a site signs (see
	// IdentityString).
	identityContext = "kefu-identity-v1"
	maxUserID       = 256
	// maxVisitorToken bounds a visitor token after its prefix: what
	// signVisitor makes of the longest user id and name fits (about 1.4 KB).
	maxVisitorToken = 2048
	// maxHelloToken bounds the token a hello or session request carries:
	// any token kefu issues fits.
	maxHelloToken = len(visitorTokenPrefix) + maxVisitorToken
	maxName       = 100
	// identityFutureSkew is how far in the future a signed timestamp may be
	// (clocks differ).
	identityFutureSkew = 5 * time.Minute
	maxSessionBody     = 8 << 10
)

// visitor is an authenticated visitor.
type visitor struct {
	identity string
	name     string
}

func (v visitor) verified() bool { return strings.HasPrefix(v.identity, verifiedPrefix) }

func (v visitor) info() *visitorInfo {
	return &visitorInfo{ID: v.identity, Verified: v.verified(), Name: v.name}
}

// visitorClaims is the signed body of a visitor token.
type visitorClaims struct {
	Channel  string `json:"c"`
	Identity string `json:"i"`
	Name     string `json:"n,omitempty"`
	Expires  int64  `json:"e"` // unix seconds
}

// visitorTokenKey derives the token key from the channel's signing key, so
// that the key signs nothing else by accident.
func visitorTokenKey(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("kefu/visitor-token/v1"))
	return m.Sum(nil)
}

func (rt *realtime) signVisitor(v visitor, exp time.Time) string {
	// Without HTML escaping: a user id or name full of < > & would
	// otherwise take six bytes a character, and the longest allowed ones
	// would make a token over maxVisitorToken.
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(visitorClaims{Channel: rt.c.name, Identity: v.identity, Name: v.name, Expires: exp.Unix()})
	p := base64.RawURLEncoding.EncodeToString(bytes.TrimSuffix(body.Bytes(), []byte("\n")))
	m := hmac.New(sha256.New, rt.tokenKey)
	m.Write([]byte(p))
	return visitorTokenPrefix + p + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// errVisitorToken answers a missing, forged or expired visitor token.
var errVisitorToken = &httpx.RequestError{Status: http.StatusUnauthorized, Code: httpx.CodeUnauthorized,
	Msg: "missing, invalid or expired visitor token; start a new session"}

// parseVisitor checks a visitor token and returns the visitor it names.
func (rt *realtime) parseVisitor(tok string) (visitor, error) {
	v, exp, err := rt.verifyVisitor(tok)
	if err == nil && !rt.c.now().Before(exp) {
		err = errVisitorToken
	}
	return v, err
}

// verifyVisitor checks that tok is a visitor token this channel signed and
// reads it, whether or not it has expired (exp says when it does).
func (rt *realtime) verifyVisitor(tok string) (v visitor, exp time.Time, err error) {
	rest, ok := strings.CutPrefix(tok, visitorTokenPrefix)
	if !ok || len(rest) > maxVisitorToken {
		return visitor{}, time.Time{}, errVisitorToken
	}
	p, sig, ok := strings.Cut(rest, ".")
	if !ok {
		return visitor{}, time.Time{}, errVisitorToken
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return visitor{}, time.Time{}, errVisitorToken
	}
	m := hmac.New(sha256.New, rt.tokenKey)
	m.Write([]byte(p))
	if !hmac.Equal(got, m.Sum(nil)) {
		return visitor{}, time.Time{}, errVisitorToken
	}
	body, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return visitor{}, time.Time{}, errVisitorToken
	}
	var cl visitorClaims
	if json.Unmarshal(body, &cl) != nil || cl.Channel != rt.c.name || !validIdentity(cl.Identity) {
		return visitor{}, time.Time{}, errVisitorToken
	}
	return visitor{identity: cl.Identity, name: cl.Name}, time.Unix(cl.Expires, 0), nil
}

func validIdentity(id string) bool {
	if a, ok := strings.CutPrefix(id, anonPrefix); ok {
		_, err := hex.DecodeString(a)
		return len(a) == 32 && err == nil
	}
	if u, ok := strings.CutPrefix(id, verifiedPrefix); ok {
		return checkUserID(u) == nil
	}
	return false
}

func newAnonymous() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return anonPrefix + hex.EncodeToString(b), nil
}

// IdentityString is the string a site's backend signs to vouch for one of
// its users: HMAC-SHA256 keyed by identity_secret, hex-encoded. The user id
// and timestamp (unix seconds) are sent along with the signature.
func IdentityString(userID string, timestamp int64) string {
	return identityContext + "\n" + userID + "\n" + strconv.FormatInt(timestamp, 10)
}

// SignIdentity is what a site's backend computes (shown here in Go; see
// docs/protocol.md for other languages).
func SignIdentity(secret, userID string, timestamp int64) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(IdentityString(userID, timestamp)))
	return hex.EncodeToString(m.Sum(nil))
}

func checkUserID(u string) error {
	if u == "" || len(u) > maxUserID {
		return fmt.Errorf("user_id must be 1 to %d bytes", maxUserID)
	}
	if !utf8.ValidString(u) {
		return errors.New("user_id must be UTF-8")
	}
	for _, r := range u {
		if unicode.IsControl(r) {
			return errors.New("user_id cannot hold control characters")
		}
	}
	return nil
}

// sessionRequest is the body of POST /api/v1/visitor/session.
type sessionRequest struct {
	// Token resumes an earlier session.
	Token string `json:"token,omitempty"`
	// Name is an optional display name.
	Name string `json:"name,omitempty"`
	// Identity is a verified identity signed by the site.
	Identity *identityProof `json:"identity,omitempty"`
}

type identityProof struct {
	UserID    string `json:"user_id"`
	Timestamp int64  `json:"timestamp"`
	Signature string `json:"signature"`
}

// decodeSessionRequest reads and checks a session request body.
func decodeSessionRequest(body []byte) (sessionRequest, error) {
	var req sessionRequest
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}") // every field is optional: no body is an anonymous visitor
	}
	if err := httpx.Unmarshal(body, &req); err != nil {
		return sessionRequest{}, err
	}
	req.Name = strings.TrimSpace(req.Name)
	if utf8.RuneCountInString(req.Name) > maxName || !utf8.ValidString(req.Name) || strings.ContainsFunc(req.Name, unicode.IsControl) {
		return sessionRequest{}, httpx.BadRequest("name must be at most %d characters of text", maxName)
	}
	if len(req.Token) > maxHelloToken {
		return sessionRequest{}, httpx.BadRequest("token too long")
	}
	if id := req.Identity; id != nil {
		if err := checkUserID(id.UserID); err != nil {
			return sessionRequest{}, httpx.BadRequest("identity: %s", err.Error())
		}
		if id.Timestamp <= 0 {
			return sessionRequest{}, httpx.BadRequest("identity: timestamp must be unix seconds")
		}
		if len(id.Signature) != 64 {
			return sessionRequest{}, httpx.BadRequest("identity: signature must be 64 hex digits")
		}
	}
	return req, nil
}

var errIdentity = &httpx.RequestError{Status: http.StatusUnauthorized, Code: httpx.CodeUnauthorized,
	Msg: "identity signature does not match or has expired"}

// verifyIdentity checks a site's signature over a user id.
func (rt *realtime) verifyIdentity(p *identityProof) (string, error) {
	secret := rt.c.cfg.IdentitySecret
	if secret == "" {
		return "", httpx.BadRequest("verified identities are not enabled on this channel (identity_secret is empty)")
	}
	want := SignIdentity(secret, p.UserID, p.Timestamp)
	got := strings.ToLower(p.Signature)
	if !hmac.Equal([]byte(got), []byte(want)) {
		return "", errIdentity
	}
	at := time.Unix(p.Timestamp, 0)
	now := rt.c.now()
	if now.Sub(at) > rt.c.cfg.IdentityMaxAge || at.Sub(now) > identityFutureSkew {
		return "", errIdentity
	}
	return verifiedPrefix + p.UserID, nil
}

// sessionResponse is the answer of POST /api/v1/visitor/session.
type sessionResponse struct {
	Token        string               `json:"token"`
	ExpiresAt    time.Time            `json:"expires_at"`
	Visitor      *visitorInfo         `json:"visitor"`
	Conversation *visitorConversation `json:"conversation"` // the newest one, or null
	LastSeq      int64                `json:"last_seq"`     // its last sequence number, 0 without one
	// Transport parameters.
	PingIntervalMS    int64 `json:"ping_interval_ms"`
	LongPollTimeoutMS int64 `json:"long_poll_timeout_ms"`
	MaxFrameBytes     int64 `json:"max_frame_bytes"`
}

// serveSession starts or resumes a visitor session.
func (rt *realtime) serveSession(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, maxSessionBody)
	if err != nil {
		httpx.FromError(w, rt.log, err)
		return
	}
	req, err := decodeSessionRequest(body)
	if err != nil {
		httpx.FromError(w, rt.log, err)
		return
	}
	var v visitor
	resumed, fresh := false, false
	if req.Token != "" {
		if v, err = rt.parseVisitor(req.Token); err != nil && req.Identity == nil {
			httpx.FromError(w, rt.log, err)
			return
		}
		resumed = err == nil
	}
	switch {
	case req.Identity != nil:
		id, err := rt.verifyIdentity(req.Identity)
		if err != nil {
			httpx.FromError(w, rt.log, err)
			return
		}
		if !resumed || v.identity != id {
			v, resumed = visitor{identity: id}, false
		}
	case !resumed:
		if v.identity, err = newAnonymous(); err != nil {
			httpx.FromError(w, rt.log, err)
			return
		}
		fresh = true // a new random identity: no conversation to look up
	}
	if req.Name != "" {
		v.name = req.Name
	}
	if !resumed {
		// A new identity here may start a conversation: cap them per address.
		if ok, wait := rt.convLimit.Allow(rt.clientKey(r)); !ok {
			httpx.TooMany(w, wait)
			return
		}
	}
	resp := sessionResponse{
		Visitor:           v.info(),
		PingIntervalMS:    rt.c.cfg.PingInterval.Milliseconds(),
		LongPollTimeoutMS: rt.c.cfg.LongPollTimeout.Milliseconds(),
		MaxFrameBytes:     rt.c.cfg.MaxFrameBytes,
	}
	if !fresh {
		cur, err := rt.newestConversation(r.Context(), v.identity)
		switch {
		case err == nil:
			resp.Conversation, resp.LastSeq = viewConversation(cur), cur.LastSeq
		case !errors.Is(err, core.ErrNotFound):
			httpx.FromError(w, rt.log, err)
			return
		}
	}
	exp := rt.c.now().Add(rt.c.cfg.VisitorTokenTTL).Truncate(time.Second)
	resp.Token, resp.ExpiresAt = rt.signVisitor(v, exp), exp.UTC()
	httpx.JSON(w, http.StatusOK, resp)
}

// historyResponse is the answer of GET /api/v1/visitor/messages.
type historyResponse struct {
	Conversation *visitorConversation `json:"conversation"`
	Messages     []visitorMessage     `json:"messages"`
	HasMore      bool                 `json:"has_more"` // older messages exist: ask again with before_seq
}

// serveHistory pages back through one of the visitor's conversations:
// public messages only, oldest first within the page.
func (rt *realtime) serveHistory(w http.ResponseWriter, r *http.Request) {
	v, err := rt.parseVisitor(bearerToken(r))
	if err != nil {
		httpx.FromError(w, rt.log, err)
		return
	}
	q := r.URL.Query()
	convID, err1 := queryInt(q, "conversation_id")
	before, err2 := queryInt(q, "before_seq")
	limit, err3 := queryInt(q, "limit")
	if err := errors.Join(err1, err2, err3); err != nil || limit > 200 {
		httpx.FromError(w, rt.log, httpx.BadRequest("conversation_id, before_seq and limit must be whole numbers ≥ 0 (limit ≤ 200), each given once"))
		return
	}
	if limit == 0 {
		limit = 50
	}
	ctx := r.Context()
	var c core.Conversation
	if convID == 0 {
		c, err = rt.newestConversation(ctx, v.identity)
	} else {
		c, err = rt.visitorConversation(ctx, v.identity, convID)
	}
	if err != nil {
		httpx.FromError(w, rt.log, err)
		return
	}
	if before == 0 {
		before = c.LastSeq + 1
	}
	ms, err := rt.store.Messages(ctx, core.MessageQuery{ConversationID: c.ID, BeforeSeq: before, Limit: int(limit) + 1, PublicOnly: true})
	if err != nil {
		httpx.FromError(w, rt.log, err)
		return
	}
	resp := historyResponse{Conversation: viewConversation(c), Messages: []visitorMessage{}}
	if len(ms) > int(limit) {
		resp.HasMore, ms = true, ms[1:]
	}
	for i := range ms {
		resp.Messages = append(resp.Messages, viewMessage(&ms[i], rt.names.get))
	}
	httpx.JSON(w, http.StatusOK, resp)
}

// queryInt reads query parameter k as a whole number ≥ 0 (absent: 0). A
// parameter given twice is an error, not read as its first value.
func queryInt(q url.Values, k string) (int64, error) {
	if len(q[k]) > 1 {
		return 0, errors.New("given more than once")
	}
	s := q.Get(k)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, errors.New("bad number")
	}
	return n, nil
}

// visitorConversation returns conversation id if it is the identity's;
// anything else, including another visitor's conversation, is ErrNotFound.
// The answer is the same for both, so that it does not tell which
// conversations exist.
func (rt *realtime) visitorConversation(ctx context.Context, identity string, id int64) (core.Conversation, error) {
	c, err := rt.store.Conversation(ctx, id)
	if err == nil && (c.Channel != rt.c.name || c.ExternalID != identity) {
		err = core.ErrNotFound
	}
	if errors.Is(err, core.ErrNotFound) {
		return core.Conversation{}, fmt.Errorf("conversation %d: %w", id, core.ErrNotFound)
	}
	if err != nil {
		return core.Conversation{}, err
	}
	return c, nil
}

// newestConversation returns the identity's newest conversation, or
// ErrNotFound.
func (rt *realtime) newestConversation(ctx context.Context, identity string) (core.Conversation, error) {
	cs, err := rt.store.Conversations(ctx, core.ConversationFilter{Channel: rt.c.name, ExternalID: identity, Limit: 1})
	if err != nil {
		return core.Conversation{}, err
	}
	if len(cs) == 0 {
		return core.Conversation{}, fmt.Errorf("no conversation yet: %w", core.ErrNotFound)
	}
	return cs[0], nil
}

// newerConversations returns the identity's conversations with an ID above
// after, oldest first, and conversation after itself as it is now (nil if
// it is not among the identity's newest 100).
func (rt *realtime) newerConversations(ctx context.Context, identity string, after int64) (*core.Conversation, []core.Conversation, error) {
	cs, err := rt.store.Conversations(ctx, core.ConversationFilter{Channel: rt.c.name, ExternalID: identity, Limit: 100})
	if err != nil {
		return nil, nil, err
	}
	var own *core.Conversation
	var out []core.Conversation
	for i := len(cs) - 1; i >= 0; i-- {
		switch {
		case cs[i].ID > after:
			out = append(out, cs[i])
		case cs[i].ID == after:
			own = &cs[i]
		}
	}
	return own, out, nil
}
