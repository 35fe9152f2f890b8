package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/kefuhq/kefu/channels/web"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/core/storetest"
	"github.com/kefuhq/kefu/node"
)

// End-to-end tests of the REST API against a real node on a loopback port:
// SQLite store, in-process bus, the web channel (as web.APITestType, so
// the tests can set its login clock) and two agents, Root (admin) and
// Alice.

const (
	apiRootEmail = "root@example.com"
	apiRootPass  = "root-password"
	apiAliceMail = "alice@example.com"
	apiAlicePass = "alice-password"
	// apiChannel is the web channel's instance name; conversations made
	// with Ingest use it.
	apiChannel = "web"
	// apiMaxBody is the test node's max_frame_bytes, the cap of a
	// message body.
	apiMaxBody = 4096
	// apiWindow is the test node's login window; its limits are 3
	// failures per account and 5 per address.
	apiWindow = time.Minute
)

// apiClock is a settable clock for the login throttle.
type apiClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *apiClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *apiClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type apiNode struct {
	t     *testing.T
	base  string
	svc   *core.Service
	store core.Store
	clock *apiClock
	root  core.Agent
	alice core.Agent
}

func startAPINode(t *testing.T) *apiNode {
	t.Helper()
	return startAPINodeWith(t, apiMaxBody)
}

// startAPINodeWith runs the test node with max_frame_bytes maxBody.
func startAPINodeWith(t *testing.T, maxBody int) *apiNode {
	t.Helper()
	dir := t.TempDir()
	yaml := fmt.Sprintf(`
server: {addr: "127.0.0.1:0"}
store: {driver: sqlite, dsn: %q}
media: {dir: %q}
log: {level: error}
routing: {strategy: least_busy, offline_reply: ""}
agents:
  - {email: %s, name: Root, role: admin, password: %s}
  - {email: %s, name: Alice, password: %s}
channels:
  %s:
    type: %s
    enabled: true
    max_frame_bytes: %d
    limits: {login_failures_per_account: 3, login_failures_per_ip: 5, login_window: %s}
`, filepath.Join(dir, "kefu.db"), filepath.Join(dir, "media"), apiRootEmail, apiRootPass, apiAliceMail, apiAlicePass,
		apiChannel, web.APITestType, maxBody, apiWindow)
	cfg, err := config.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := node.New(ctx, cfg, node.Options{Listener: ln})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	h := &apiNode{t: t, base: "http://" + ln.Addr().String(), svc: n.Service(), store: n.Service().Store(),
		clock: &apiClock{now: time.Now()}}
	ch := web.APITestChannel(h.svc)
	if ch == nil {
		cancel()
		_ = n.Close()
		t.Fatal("the web channel was not built")
	}
	ch.SetLoginClock(h.clock.Now)
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("node stopped with %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("node did not stop")
		}
	})
	if h.root, err = h.store.AgentByEmail(ctx, apiRootEmail); err != nil {
		t.Fatal(err)
	}
	if h.alice, err = h.store.AgentByEmail(ctx, apiAliceMail); err != nil {
		t.Fatal(err)
	}
	// bcrypt at its default cost takes most of a second per check under
	// the race detector; the seeded passwords are re-hashed at the lowest
	// cost so that logins are quick. The check itself is unchanged: it
	// reads the cost from the hash.
	for _, a := range []*core.Agent{&h.root, &h.alice} {
		pw := map[int64]string{h.root.ID: apiRootPass, h.alice.ID: apiAlicePass}[a.ID]
		hash, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		a.PasswordHash = string(hash)
		if err := storetest.UpdateAgent(h.store, *a); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// apiResp is an answer.
type apiResp struct {
	status int
	header http.Header
	body   []byte
}

// decode reads the answer's JSON into v.
func (r apiResp) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

// code is the error code of an error answer.
func (r apiResp) code() string {
	var e struct {
		Error struct{ Code, Message string }
	}
	_ = json.Unmarshal(r.body, &e)
	return e.Error.Code
}

// want fails the test unless the answer has the given status.
func (r apiResp) want(t *testing.T, what string, status int) apiResp {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: HTTP %d %s, want %d", what, r.status, r.body, status)
	}
	if status >= 400 && r.code() == "" {
		t.Fatalf("%s: error answer without a code: %s", what, r.body)
	}
	return r
}

// do sends a request. body is nil, a string sent as is, or a value sent as
// JSON.
func (h *apiNode) do(method, path, token string, body any) apiResp {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, h.base+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return apiResp{status: resp.StatusCode, header: resp.Header, body: data}
}

type apiAgent struct {
	ID           int64     `json:"id"`
	Email        string    `json:"email"`
	Name         string    `json:"name"`
	Role         string    `json:"role"`
	Active       bool      `json:"active"`
	Availability string    `json:"availability"`
	CreatedAt    time.Time `json:"created_at"`
	WeComUserID  *string   `json:"wecom_userid"`
	SlackUser    *string   `json:"slack_user"`
}

type apiLogin struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	Agent     apiAgent  `json:"agent"`
}

// login logs in and returns the token.
func (h *apiNode) login(email, password string) string {
	h.t.Helper()
	var l apiLogin
	h.do("POST", "/api/v1/auth/login", "", map[string]string{"email": email, "password": password}).
		want(h.t, "login "+email, http.StatusOK).decode(h.t, &l)
	if l.Token == "" {
		h.t.Fatalf("login %s: no token", email)
	}
	return l.Token
}

// ingest makes a customer message on a channel instance, as a channel would.
func (h *apiNode) ingest(channel, from, name, text string) core.Ingested {
	h.t.Helper()
	in, err := h.svc.Ingest(context.Background(), core.Inbound{Channel: channel, ExternalID: from, Name: name,
		Message: core.Message{Kind: core.KindText, Text: text}})
	if err != nil {
		h.t.Fatal(err)
	}
	return in
}

func (h *apiNode) conversation(id int64) core.Conversation {
	h.t.Helper()
	c, err := h.store.Conversation(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func (h *apiNode) messageCount(convID int64) int {
	h.t.Helper()
	ms, err := h.store.Messages(context.Background(), core.MessageQuery{ConversationID: convID, Limit: 1000})
	if err != nil {
		h.t.Fatal(err)
	}
	return len(ms)
}

type apiConversation struct {
	ID      int64  `json:"id"`
	Number  string `json:"number"`
	Status  string `json:"status"`
	Channel string `json:"channel"`
	Contact struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	} `json:"contact"`
	Assignee *struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	} `json:"assignee"`
	LastSeq     int64 `json:"last_seq"`
	LastMessage *struct {
		ID         int64     `json:"id"`
		Seq        int64     `json:"seq"`
		SenderKind string    `json:"sender_kind"`
		Visibility string    `json:"visibility"`
		Kind       string    `json:"kind"`
		Text       string    `json:"text"`
		CreatedAt  time.Time `json:"created_at"`
	} `json:"last_message"`
	CreatedAt  time.Time  `json:"created_at"`
	ResolvedAt *time.Time `json:"resolved_at"`
}

func (c apiConversation) assignee() int64 {
	if c.Assignee == nil {
		return 0
	}
	return c.Assignee.ID
}

type apiMessage struct {
	ID             int64  `json:"id"`
	ConversationID int64  `json:"conversation_id"`
	Seq            int64  `json:"seq"`
	SenderKind     string `json:"sender_kind"`
	SenderID       int64  `json:"sender_id"`
	Visibility     string `json:"visibility"`
	Kind           string `json:"kind"`
	Text           string `json:"text"`
	Status         string `json:"status"`
	FailReason     string `json:"fail_reason"`
	ResendOf       int64  `json:"resend_of"`
	Event          *struct {
		Type string `json:"type"`
	} `json:"event"`
	CreatedAt time.Time `json:"created_at"`
}

func TestAPILoginLogout(t *testing.T) {
	t.Parallel()
	h := startAPINode(t)

	var l apiLogin
	h.do("POST", "/api/v1/auth/login", "", map[string]string{"email": "ALICE@example.com", "password": apiAlicePass}).
		want(t, "login", http.StatusOK).decode(t, &l)
	if !strings.HasPrefix(l.Token, "kfa_") || l.Agent.ID != h.alice.ID || l.Agent.Email != apiAliceMail ||
		l.Agent.Role != "agent" || !l.Agent.Active {
		t.Fatalf("login answer %+v", l)
	}
	if d := time.Until(l.ExpiresAt); d < 7*24*time.Hour-time.Minute || d > 7*24*time.Hour || l.ExpiresAt.Location() != time.UTC {
		t.Errorf("expires_at %v, want in agent_token_ttl (7 days), UTC", l.ExpiresAt)
	}
	var me apiAgent
	h.do("GET", "/api/v1/me", l.Token, nil).want(t, "me", http.StatusOK).decode(t, &me)
	if me.ID != h.alice.ID || me.Name != "Alice" || me.Availability != "offline" {
		t.Fatalf("me = %+v", me)
	}
	// Only the token's hash is stored.
	if _, err := h.store.Session(context.Background(), l.Token); err == nil {
		t.Fatal("the token itself is a session key in the store")
	}
	if _, err := h.store.Session(context.Background(), web.HashAgentToken(l.Token)); err != nil {
		t.Fatalf("session by hash: %v", err)
	}

	h.do("POST", "/api/v1/auth/logout", l.Token, nil).want(t, "logout", http.StatusNoContent)
	r := h.do("GET", "/api/v1/me", l.Token, nil).want(t, "me after logout", http.StatusUnauthorized)
	if r.code() != "unauthorized" || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("401 answer: %s %v", r.body, r.header)
	}
	h.do("POST", "/api/v1/auth/logout", l.Token, nil).want(t, "logout twice", http.StatusUnauthorized)

	// A wrong password and an unknown email get the same answer.
	wrong := h.do("POST", "/api/v1/auth/login", "", map[string]string{"email": apiAliceMail, "password": "nope-nope"}).
		want(t, "wrong password", http.StatusUnauthorized)
	unknown := h.do("POST", "/api/v1/auth/login", "", map[string]string{"email": "nobody@example.com", "password": "nope-nope"}).
		want(t, "unknown email", http.StatusUnauthorized)
	if !bytes.Equal(wrong.body, unknown.body) {
		t.Errorf("wrong password answers %s, unknown email %s", wrong.body, unknown.body)
	}
	for name, body := range map[string]string{
		"malformed":     `{"email":`,
		"unknown field": `{"email":"a@example.com","password":"x","remember":true}`,
		"missing":       `{"email":"a@example.com"}`,
		"not an object": `[]`,
		"null":          `null`,
		"trailing":      `{"email":"a@example.com","password":"x"} {}`,
	} {
		h.do("POST", "/api/v1/auth/login", "", body).want(t, name, http.StatusBadRequest)
	}
	h.do("GET", "/api/v1/auth/login", "", nil).want(t, "GET login", http.StatusMethodNotAllowed)
}

func TestAPILoginThrottle(t *testing.T) {
	t.Parallel()
	h := startAPINode(t)
	login := func(email, password string) apiResp {
		return h.do("POST", "/api/v1/auth/login", "", map[string]string{"email": email, "password": password})
	}
	retryAfter := func(r apiResp) int {
		t.Helper()
		s, err := strconv.Atoi(r.header.Get("Retry-After"))
		if err != nil || s < 1 || s > int(apiWindow/time.Second) {
			t.Fatalf("Retry-After %q, want 1..%d seconds", r.header.Get("Retry-After"), int(apiWindow/time.Second))
		}
		return s
	}

	// Per account: three failures, then even the right password is refused.
	for i := range 3 {
		login(apiAliceMail, "wrong-"+strconv.Itoa(i)).want(t, "failure", http.StatusUnauthorized)
	}
	r := login(apiAliceMail, apiAlicePass).want(t, "right password while throttled", http.StatusTooManyRequests)
	if r.code() != "rate_limited" {
		t.Errorf("code %q", r.code())
	}
	retryAfter(r)
	// Another account from the same address is not locked (3 < 5 failures).
	h.login(apiRootEmail, apiRootPass)
	h.clock.Advance(30 * time.Second)
	if s := retryAfter(login(apiAliceMail, apiAlicePass).want(t, "still throttled", http.StatusTooManyRequests)); s > 30 {
		t.Errorf("Retry-After %d s half-way through the window, want ≤ 30", s)
	}
	h.clock.Advance(31 * time.Second)
	h.login(apiAliceMail, apiAlicePass) // the window has passed

	// Per address: failures on any accounts count. A success does not
	// reset them.
	h.clock.Advance(2 * apiWindow)
	for i := range 4 {
		login(fmt.Sprintf("guess%d@example.com", i), "wrong-password").want(t, "failure", http.StatusUnauthorized)
	}
	h.login(apiRootEmail, apiRootPass)
	login("guess9@example.com", "wrong-password").want(t, "fifth failure", http.StatusUnauthorized)
	retryAfter(login(apiRootEmail, apiRootPass).want(t, "address throttled", http.StatusTooManyRequests))
	login("guess0@example.com", "wrong-password").want(t, "address throttled, unknown email", http.StatusTooManyRequests)
	h.clock.Advance(apiWindow)
	h.login(apiRootEmail, apiRootPass)
}

func TestAPITokens(t *testing.T) {
	t.Parallel()
	h := startAPINode(t)
	ctx := context.Background()
	good := h.login(apiAliceMail, apiAlicePass)
	h.do("GET", "/api/v1/me", good, nil).want(t, "good token", http.StatusOK)

	// A well-formed token with an expired session.
	expired := "kfa_" + strings.Repeat("A", 43)
	if err := h.store.CreateSession(ctx, core.Session{TokenHash: web.HashAgentToken(expired), AgentID: h.alice.ID,
		CreatedAt: time.Now().Add(-2 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	revoked := h.login(apiAliceMail, apiAlicePass)
	if err := h.store.RevokeSession(ctx, web.HashAgentToken(revoked)); err != nil {
		t.Fatal(err)
	}
	for name, token := range map[string]string{
		"none":      "",
		"garbage":   "not-a-token",
		"unknown":   "kfa_" + strings.Repeat("B", 43),
		"truncated": good[:len(good)-1],
		"expired":   expired,
		"revoked":   revoked,
	} {
		h.do("GET", "/api/v1/conversations", token, nil).want(t, name, http.StatusUnauthorized)
	}
	// A raw Authorization header that is not Bearer.
	req, _ := http.NewRequest("GET", h.base+"/api/v1/me", nil)
	req.Header.Set("Authorization", "Basic "+good)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("Basic auth: HTTP %d", resp.StatusCode)
	}
	h.do("GET", "/api/v1/me", good, nil).want(t, "good token still", http.StatusOK)
}

func TestAPIAdminOnly(t *testing.T) {
	t.Parallel()
	h := startAPINode(t)
	alice := h.login(apiAliceMail, apiAlicePass)
	root := fmt.Sprint(h.root.ID)
	for _, tc := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/api/v1/agents", map[string]string{"email": "eve@example.com", "name": "Eve", "password": "eve-password"}},
		{"PATCH", "/api/v1/agents/" + root, map[string]any{"active": false}},
		{"PATCH", "/api/v1/agents/" + fmt.Sprint(h.alice.ID), map[string]any{"role": "admin"}},
		{"POST", "/api/v1/agents/" + root + "/password", map[string]string{"password": "taken-over"}},
	} {
		h.do(tc.method, tc.path, alice, tc.body).want(t, tc.method+" "+tc.path, http.StatusForbidden)
	}
	if _, err := h.store.AgentByEmail(context.Background(), "eve@example.com"); err == nil {
		t.Error("a non-admin created an agent")
	}
	h.login(apiRootEmail, apiRootPass) // the password is unchanged
	if a, _ := h.store.Agent(context.Background(), h.alice.ID); a.Role != core.RoleAgent {
		t.Error("a non-admin promoted themselves")
	}

	// Everyone lists agents; only admins see emails (and everyone their own).
	var list struct{ Agents []apiAgent }
	h.do("GET", "/api/v1/agents", alice, nil).want(t, "list as agent", http.StatusOK).decode(t, &list)
	if len(list.Agents) != 2 || list.Agents[0].Email != "" || list.Agents[1].Email != apiAliceMail ||
		list.Agents[0].Name != "Root" || list.Agents[0].Role != "admin" {
		t.Errorf("agents as alice: %+v", list.Agents)
	}

	// The admin creates an agent, who can log in.
	admin := h.login(apiRootEmail, apiRootPass)
	var eve apiAgent
	h.do("POST", "/api/v1/agents", admin, map[string]string{"email": "eve@example.com", "name": "Eve", "password": "eve-password"}).
		want(t, "create", http.StatusCreated).decode(t, &eve)
	if eve.ID == 0 || eve.Role != "agent" || !eve.Active || eve.Email != "eve@example.com" {
		t.Fatalf("created %+v", eve)
	}
	h.login("eve@example.com", "eve-password")
	h.do("POST", "/api/v1/agents", admin, map[string]string{"email": "EVE@example.com", "name": "Eve 2", "password": "eve-password"}).
		want(t, "taken email", http.StatusConflict)
	h.do("POST", "/api/v1/agents", admin, map[string]string{"email": "f@example.com", "name": "F", "password": "short"}).
		want(t, "short password", http.StatusBadRequest)
	h.do("POST", "/api/v1/agents", admin, map[string]string{"email": "f@example.com", "name": "F", "password": "long-enough", "role": "owner"}).
		want(t, "bad role", http.StatusBadRequest)
	h.do("GET", "/api/v1/agents", admin, nil).want(t, "list as admin", http.StatusOK).decode(t, &list)
	if len(list.Agents) != 3 || list.Agents[0].Email != apiRootEmail {
		t.Errorf("agents as root: %+v", list.Agents)
	}
	h.do("PATCH", "/api/v1/agents/999", admin, map[string]any{"name": "X"}).want(t, "patch missing", http.StatusNotFound)
}

// TestAPIAgentLinks: an admin links an agent to Work WeChat and Slack
// when creating them or later, and unlinks them; admins and the agent see
// the links, other agents do not; a malformed or taken id is refused.
func TestAPIAgentLinks(t *testing.T) {
	t.Parallel()
	h := startAPINode(t)
	admin := h.login(apiRootEmail, apiRootPass)
	alice := h.login(apiAliceMail, apiAlicePass)
	path := fmt.Sprintf("/api/v1/agents/%d", h.alice.ID)

	var got apiAgent
	h.do("PATCH", path, admin, map[string]any{"wecom_userid": "alice", "slack_user": "U0ALICE"}).
		want(t, "link", http.StatusOK).decode(t, &got)
	if got.WeComUserID == nil || *got.WeComUserID != "alice" || got.SlackUser == nil || *got.SlackUser != "U0ALICE" {
		t.Fatalf("linked %+v", got)
	}
	if a, _ := h.store.Agent(context.Background(), h.alice.ID); a.WeComUserID != "alice" || a.SlackUser != "U0ALICE" {
		t.Fatalf("stored %+v", a)
	}
	h.do("PATCH", path, alice, map[string]any{"slack_user": "U0OTHER"}).want(t, "link self", http.StatusForbidden)
	h.do("PATCH", path, admin, map[string]any{"wecom_userid": "-alice"}).want(t, "malformed", http.StatusBadRequest)

	// Alice sees her links; nobody but admins sees another's.
	var me apiAgent
	h.do("GET", "/api/v1/me", alice, nil).want(t, "me", http.StatusOK).decode(t, &me)
	if me.WeComUserID == nil || *me.WeComUserID != "alice" {
		t.Errorf("alice's own view: %+v", me)
	}
	var list struct{ Agents []apiAgent }
	h.do("GET", "/api/v1/agents", alice, nil).want(t, "list as alice", http.StatusOK).decode(t, &list)
	if root := list.Agents[0]; root.WeComUserID != nil || root.SlackUser != nil {
		t.Errorf("alice sees root's links: %+v", root)
	}

	var eve apiAgent
	h.do("POST", "/api/v1/agents", admin, map[string]string{"email": "eve@example.com", "name": "Eve", "password": "eve-password",
		"wecom_userid": "ALICE"}).want(t, "create with alice's id", http.StatusConflict)
	h.do("POST", "/api/v1/agents", admin, map[string]string{"email": "eve@example.com", "name": "Eve", "password": "eve-password",
		"wecom_userid": "eve", "slack_user": "U0EVE"}).want(t, "create linked", http.StatusCreated).decode(t, &eve)
	if eve.WeComUserID == nil || *eve.WeComUserID != "eve" || *eve.SlackUser != "U0EVE" {
		t.Fatalf("created %+v", eve)
	}

	h.do("PATCH", path, admin, map[string]any{"wecom_userid": "", "slack_user": ""}).want(t, "unlink", http.StatusOK).decode(t, &got)
	if *got.WeComUserID != "" || *got.SlackUser != "" {
		t.Fatalf("unlinked %+v", got)
	}
}

func TestAPIMe(t *testing.T) {
	t.Parallel()
	h := startAPINode(t)
	alice := h.login(apiAliceMail, apiAlicePass)
	release := h.svc.Presence().Connect(h.alice.ID) // her console
	defer release()
	var me apiAgent
	h.do("GET", "/api/v1/me", alice, nil).want(t, "me", http.StatusOK).decode(t, &me)
	if me.Availability != "available" {
		t.Fatalf("availability %q, want available", me.Availability)
	}
	h.do("PATCH", "/api/v1/me", alice, map[string]any{"name": "Alice Liddell", "away": true}).
		want(t, "patch me", http.StatusOK).decode(t, &me)
	if me.Name != "Alice Liddell" || me.Availability != "away" {
		t.Fatalf("after patch: %+v", me)
	}
	if avail, _ := h.svc.Presence().Available(context.Background()); slices.Contains(avail, h.alice.ID) {
		t.Fatal("away agent still available for routing")
	}
	h.do("PATCH", "/api/v1/me", alice, map[string]any{"away": false}).want(t, "back", http.StatusOK).decode(t, &me)
	if me.Availability != "available" {
		t.Fatalf("availability %q after coming back", me.Availability)
	}
	h.do("PATCH", "/api/v1/me", alice, map[string]any{"role": "admin"}).want(t, "patch my role", http.StatusBadRequest)
	h.do("PATCH", "/api/v1/me", alice, map[string]any{"name": ""}).want(t, "empty name", http.StatusBadRequest)
	h.do("PATCH", "/api/v1/me", alice, map[string]any{}).want(t, "nothing", http.StatusBadRequest)
}

func TestAPIPasswords(t *testing.T) {
	t.Parallel()
	h := startAPINode(t)
	a1 := h.login(apiAliceMail, apiAlicePass)
	a2 := h.login(apiAliceMail, apiAlicePass)

	// Her own change: the current password is checked, her other sessions end.
	h.do("POST", "/api/v1/me/password", a1, map[string]string{"current": "wrong-one", "new": "alice-new-password"}).
		want(t, "wrong current", http.StatusForbidden)
	h.do("POST", "/api/v1/me/password", a1, map[string]string{"current": apiAlicePass, "new": "short"}).
		want(t, "too short", http.StatusBadRequest)
	h.do("GET", "/api/v1/me", a2, nil).want(t, "a refused change ends nothing", http.StatusOK)
	h.do("POST", "/api/v1/me/password", a1, map[string]string{"current": apiAlicePass, "new": "alice-new-password"}).
		want(t, "change", http.StatusNoContent)
	h.do("GET", "/api/v1/me", a1, nil).want(t, "the session that changed it", http.StatusOK)
	h.do("GET", "/api/v1/me", a2, nil).want(t, "another session", http.StatusUnauthorized)
	h.do("POST", "/api/v1/auth/login", "", map[string]string{"email": apiAliceMail, "password": apiAlicePass}).
		want(t, "old password", http.StatusUnauthorized)
	a3 := h.login(apiAliceMail, "alice-new-password")

	// An admin reset ends all of her sessions.
	root := h.login(apiRootEmail, apiRootPass)
	h.do("POST", fmt.Sprintf("/api/v1/agents/%d/password", h.alice.ID), root, map[string]string{"password": "reset-by-root"}).
		want(t, "reset", http.StatusNoContent)
	for _, tok := range []string{a1, a3} {
		h.do("GET", "/api/v1/me", tok, nil).want(t, "after reset", http.StatusUnauthorized)
	}
	h.login(apiAliceMail, "reset-by-root")
	h.do("GET", "/api/v1/me", root, nil).want(t, "the admin's own session", http.StatusOK)
}

func TestAPIConversationList(t *testing.T) {
	t.Parallel()
	h := startAPINode(t)
	ctx := context.Background()
	alice := h.login(apiAliceMail, apiAlicePass)
	// Nobody is online: every conversation waits in the queue.
	c1 := h.ingest(apiChannel, "v1", "Zhang San", "first")
	c2 := h.ingest(apiChannel, "v2", "Li Si", "second")
	c3 := h.ingest("shop", "u3", "Wang Wu", "third")
	c4 := h.ingest(apiChannel, "v4", "Zhao Liu", "fourth")
	c5 := h.ingest(apiChannel, "v1", "Zhang San", "more from v1") // same conversation as c1
	if c5.Conversation.ID != c1.Conversation.ID {
		t.Fatal("expected the same conversation")
	}
	if _, err := h.svc.Take(ctx, h.alice.ID, c1.Conversation.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Take(ctx, h.root.ID, c3.Conversation.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Close(ctx, h.root.ID, c4.Conversation.ID); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("长", 200)
	if _, err := h.svc.Reply(ctx, h.root.ID, c3.Conversation.ID, core.Message{Kind: core.KindText, Text: long}); err != nil {
		t.Fatal(err)
	}
	id1, id2, id3, id4 := c1.Conversation.ID, c2.Conversation.ID, c3.Conversation.ID, c4.Conversation.ID

	list := func(query string) ([]apiConversation, *int64) {
		t.Helper()
		var out struct {
			Conversations []apiConversation
			Next          *int64
		}
		h.do("GET", "/api/v1/conversations"+query, alice, nil).want(t, query, http.StatusOK).decode(t, &out)
		return out.Conversations, out.Next
	}
	ids := func(cs []apiConversation) []int64 {
		var out []int64
		for _, c := range cs {
			out = append(out, c.ID)
		}
		return out
	}
	for _, tc := range []struct {
		query string
		want  []int64
	}{
		{"", []int64{id4, id3, id2, id1}},
		{"?status=open", []int64{id3, id1}},
		{"?status=pending,resolved", []int64{id4, id2}},
		{"?status=pending&status=resolved", []int64{id4, id2}},
		{"?assignee=me", []int64{id1}},
		{"?assignee=none", []int64{id4, id2}},
		{fmt.Sprintf("?assignee=%d", h.root.ID), []int64{id3}},
		{"?channel=shop", []int64{id3}},
		{"?channel=" + apiChannel + "&status=open", []int64{id1}},
		{fmt.Sprintf("?contact=%d", c2.Contact.ID), []int64{id2}},
		{"?channel=nowhere", nil},
	} {
		if got, _ := list(tc.query); !slices.Equal(ids(got), tc.want) {
			t.Errorf("%q: %v, want %v", tc.query, ids(got), tc.want)
		}
	}

	// Paging: newest first, next is the before cursor.
	page, next := list("?limit=3")
	if !slices.Equal(ids(page), []int64{id4, id3, id2}) || next == nil || *next != id2 {
		t.Fatalf("page 1: %v next %v", ids(page), next)
	}
	page, next = list(fmt.Sprintf("?limit=3&before=%d", *next))
	if !slices.Equal(ids(page), []int64{id1}) || next != nil {
		t.Fatalf("page 2: %v next %v", ids(page), next)
	}

	// What a list shows.
	all, _ := list("")
	byID := map[int64]apiConversation{}
	for _, c := range all {
		byID[c.ID] = c
	}
	if c := byID[id1]; c.Number != fmt.Sprintf("#%d", id1) || c.Status != "open" || c.Channel != apiChannel ||
		c.Contact.Name != "Zhang San" || c.Contact.ID != c1.Contact.ID || c.assignee() != h.alice.ID ||
		c.Assignee.Name != "Alice" || c.LastMessage == nil || c.LastMessage.Text != "more from v1" ||
		c.LastMessage.SenderKind != "contact" || c.LastSeq < 2 || c.ResolvedAt != nil {
		t.Errorf("conversation 1 as listed: %+v", c)
	}
	if c := byID[id3]; c.Contact.Name != "Wang Wu" || c.LastMessage == nil || c.LastMessage.SenderKind != "agent" ||
		c.LastMessage.Text != strings.Repeat("长", 140) {
		t.Errorf("conversation 3 as listed (preview cut to 140 characters): %+v", c)
	}
	if c := byID[id2]; c.Assignee != nil || c.Status != "pending" {
		t.Errorf("conversation 2 as listed: %+v", c)
	}
	if c := byID[id4]; c.Status != "resolved" || c.ResolvedAt == nil || c.ResolvedAt.Location() != time.UTC {
		t.Errorf("conversation 4 as listed: %+v", c)
	}

	var one apiConversation
	h.do("GET", fmt.Sprintf("/api/v1/conversations/%d", id1), alice, nil).want(t, "get one", http.StatusOK).decode(t, &one)
	if one.ID != id1 || one.Contact.Name != "Zhang San" || one.assignee() != h.alice.ID {
		t.Errorf("one conversation: %+v", one)
	}
	h.do("GET", "/api/v1/conversations/99999", alice, nil).want(t, "missing", http.StatusNotFound)

	for _, q := range []string{"?status=closed", "?assignee=someone", "?assignee=0", "?limit=0", "?limit=501",
		"?limit=x", "?before=-1", "?contact=abc", "?sort=asc", "?channel=",
		// given twice (status alone takes several): not read as the first
		"?assignee=none&assignee=bogus", "?contact=1&contact=2", "?limit=5&limit=0", "?channel=web&channel="} {
		h.do("GET", "/api/v1/conversations"+q, alice, nil).want(t, q, http.StatusBadRequest)
	}
	// Endpoints that take no parameter refuse one, rather than ignore it.
	for _, p := range []string{"/api/v1/agents?role=admin", "/api/v1/me?x=1", "/api/v1/devices?owner=1",
		fmt.Sprintf("/api/v1/conversations/%d?status=open", id1), fmt.Sprintf("/api/v1/conversations/%d/templates?name=x", id1)} {
		h.do("GET", p, alice, nil).want(t, p, http.StatusBadRequest)
	}
	h.do("GET", "/api/v1/agents", alice, nil).want(t, "agents without parameters", http.StatusOK)
}

func TestAPIHistory(t *testing.T) {
	t.Parallel()
	h := startAPINode(t)
	ctx := context.Background()
	alice := h.login(apiAliceMail, apiAlicePass)
	conv := h.ingest(apiChannel, "v1", "Zhang San", "m1").Conversation.ID // seq 1
	if _, err := h.svc.Take(ctx, h.alice.ID, conv); err != nil {          // seq 2: assigned
		t.Fatal(err)
	}
	for i := 3; i <= 12; i++ {
		m := core.Message{Kind: core.KindText, Text: "m" + strconv.Itoa(i)}
		var err error
		if i%4 == 0 {
			_, err = h.svc.Note(ctx, h.alice.ID, conv, m)
		} else {
			_, err = h.svc.Reply(ctx, h.alice.ID, conv, m)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	page := func(query string) ([]int64, bool, []apiMessage) {
		t.Helper()
		var out struct {
			Messages []apiMessage
			HasMore  bool `json:"has_more"`
		}
		h.do("GET", fmt.Sprintf("/api/v1/conversations/%d/messages%s", conv, query), alice, nil).
			want(t, query, http.StatusOK).decode(t, &out)
		var seqs []int64
		for _, m := range out.Messages {
			seqs = append(seqs, m.Seq)
		}
		return seqs, out.HasMore, out.Messages
	}
	for _, tc := range []struct {
		query string
		seqs  []int64
		more  bool
	}{
		{"?limit=5", []int64{8, 9, 10, 11, 12}, true},
		{"?limit=5&before_seq=8", []int64{3, 4, 5, 6, 7}, true},
		{"?limit=5&before_seq=3", []int64{1, 2}, false},
		{"?after_seq=0&limit=5", []int64{1, 2, 3, 4, 5}, true},
		{"?after_seq=10&limit=5", []int64{11, 12}, false},
		{"?after_seq=2&before_seq=6", []int64{3, 4, 5}, false},
		{"", []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, false},
	} {
		seqs, more, _ := page(tc.query)
		if !slices.Equal(seqs, tc.seqs) || more != tc.more {
			t.Errorf("%q: seqs %v more %v, want %v %v", tc.query, seqs, more, tc.seqs, tc.more)
		}
	}
	// Agents see notes and events.
	_, _, ms := page("?after_seq=0&limit=4")
	if ms[0].SenderKind != "contact" || ms[0].Text != "m1" || ms[1].Kind != "event" || ms[1].Event == nil ||
		ms[1].Event.Type != "assigned" || ms[3].Visibility != "internal" || ms[3].Text != "m4" || ms[2].SenderID != h.alice.ID {
		t.Errorf("first messages: %+v", ms)
	}
	for _, q := range []string{"?before_seq=0", "?after_seq=-1", "?limit=501", "?limit=0", "?seq=3", "?limit=5&limit=abc"} {
		h.do("GET", fmt.Sprintf("/api/v1/conversations/%d/messages%s", conv, q), alice, nil).want(t, q, http.StatusBadRequest)
	}
	h.do("GET", "/api/v1/conversations/99999/messages", alice, nil).want(t, "missing conversation", http.StatusNotFound)

	// Read marker: the customer's messages up to seq become read.
	h.do("POST", fmt.Sprintf("/api/v1/conversations/%d/read", conv), alice, map[string]int64{"seq": 12}).
		want(t, "read", http.StatusNoContent)
	if m, _ := h.store.Messages(ctx, core.MessageQuery{ConversationID: conv, Limit: 1}); m[0].Status != core.MsgRead {
		t.Errorf("customer message after read marker: %s", m[0].Status)
	}
	h.do("POST", fmt.Sprintf("/api/v1/conversations/%d/read", conv), alice, map[string]int64{"seq": 0}).
		want(t, "read 0", http.StatusBadRequest)
	h.do("POST", "/api/v1/conversations/99999/read", alice, map[string]int64{"seq": 1}).
		want(t, "read missing", http.StatusNotFound)
}

func TestAPIReplyIdempotent(t *testing.T) {
	t.Parallel()
	h := startAPINode(t)
	alice := h.login(apiAliceMail, apiAlicePass)
	conv := h.ingest(apiChannel, "v1", "Zhang San", "hello").Conversation.ID
	other := h.ingest(apiChannel, "v2", "Li Si", "hi").Conversation.ID
	path := fmt.Sprintf("/api/v1/conversations/%d/messages", conv)

	var first, second apiMessage
	h.do("POST", path, alice, map[string]string{"client_id": "c-1", "text": "Hi! How can I help?"}).
		want(t, "reply", http.StatusCreated).decode(t, &first)
	before := h.messageCount(conv)
	h.do("POST", path, alice, map[string]string{"client_id": "c-1", "text": "Hi! How can I help?"}).
		want(t, "retry", http.StatusCreated).decode(t, &second)
	if first.ID == 0 || first != second {
		t.Fatalf("retry answered %+v, first %+v", second, first)
	}
	if first.SenderKind != "agent" || first.SenderID != h.alice.ID || first.Visibility != "public" || first.Text != "Hi! How can I help?" {
		t.Errorf("reply %+v", first)
	}
	if n := h.messageCount(conv); n != before {
		t.Fatalf("retry stored a message: %d → %d", before, n)
	}
	// The reply took the waiting conversation for her.
	if c := h.conversation(conv); c.AssigneeID != h.alice.ID || c.Status != core.StatusOpen {
		t.Errorf("conversation after reply: %+v", c)
	}
	// The same client id elsewhere is a conflict; another agent's is not.
	h.do("POST", fmt.Sprintf("/api/v1/conversations/%d/messages", other), alice,
		map[string]string{"client_id": "c-1", "text": "Hi!"}).want(t, "reused client id", http.StatusConflict)
	h.do("POST", fmt.Sprintf("/api/v1/conversations/%d/notes", conv), alice,
		map[string]string{"client_id": "c-1", "text": "a note"}).want(t, "reused as a note", http.StatusConflict)
	root := h.login(apiRootEmail, apiRootPass)
	var rootMsg apiMessage
	h.do("POST", path, root, map[string]string{"client_id": "c-1", "text": "Root here"}).
		want(t, "another agent's c-1", http.StatusCreated).decode(t, &rootMsg)
	if rootMsg.ID == first.ID {
		t.Fatal("two agents' client ids collided")
	}

	// Notes are internal.
	var note apiMessage
	h.do("POST", fmt.Sprintf("/api/v1/conversations/%d/notes", conv), alice, map[string]string{"client_id": "n-1", "text": "VIP"}).
		want(t, "note", http.StatusCreated).decode(t, &note)
	if note.Visibility != "internal" || note.Text != "VIP" {
		t.Errorf("note %+v", note)
	}
	h.do("POST", "/api/v1/conversations/99999/messages", alice, map[string]string{"client_id": "x", "text": "hi"}).
		want(t, "missing conversation", http.StatusNotFound)
}

// A reply's or a note's text over 16 KiB is refused, as over the realtime
// protocol, though the body is within max_frame_bytes; nothing is stored.
func TestAPITextLimit(t *testing.T) {
	t.Parallel()
	h := startAPINodeWith(t, 64<<10)
	alice := h.login(apiAliceMail, apiAlicePass)
	conv := h.ingest(apiChannel, "v1", "Zhang San", "hello").Conversation.ID
	before := h.messageCount(conv)
	long := strings.Repeat("a", 16<<10+1)
	for _, kind := range []string{"messages", "notes"} {
		h.do("POST", fmt.Sprintf("/api/v1/conversations/%d/%s", conv, kind), alice, map[string]string{"client_id": "long-" + kind, "text": long}).
			want(t, "long "+kind, http.StatusRequestEntityTooLarge)
	}
	if n := h.messageCount(conv); n != before {
		t.Fatalf("a refused text was stored: %d → %d", before, n)
	}
	h.do("POST", fmt.Sprintf("/api/v1/conversations/%d/messages", conv), alice, map[string]string{"client_id": "at-limit", "text": long[1:]}).
		want(t, "16 KiB exactly", http.StatusCreated)
}

func TestAPITakeRace(t *testing.T) {
	t.Parallel()
	h := startAPINode(t)
	tokens := []string{h.login(apiRootEmail, apiRootPass), h.login(apiAliceMail, apiAlicePass)}
	for round := range 5 {
		conv := h.ingest(apiChannel, fmt.Sprintf("race-%d", round), "Racer", "who takes me?").Conversation.ID
		statuses := make([]int, 2)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, tok := range tokens {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				req, _ := http.NewRequest("POST", fmt.Sprintf("%s/api/v1/conversations/%d/take", h.base, conv), nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				statuses[i] = resp.StatusCode
			}()
		}
		close(start)
		wg.Wait()
		slices.Sort(statuses)
		if !slices.Equal(statuses, []int{http.StatusOK, http.StatusConflict}) {
			t.Fatalf("round %d: statuses %v, want one 200 and one 409", round, statuses)
		}
		if c := h.conversation(conv); c.AssigneeID != h.root.ID && c.AssigneeID != h.alice.ID {
			t.Fatalf("round %d: assignee %d", round, c.AssigneeID)
		}
	}
}

// TestAPIAssignOneselfAResolvedConversation: assigning oneself one's own
// resolved conversation is a take of it, which is refused (409), not a
// change of nothing.
func TestAPIAssignOneselfAResolvedConversation(t *testing.T) {
	t.Parallel()
	h := startAPINode(t)
	alice := h.login(apiAliceMail, apiAlicePass)
	conv := h.ingest(apiChannel, "v1", "Zhang San", "hello").Conversation.ID
	for _, step := range []struct {
		action string
		body   any
		status int
	}{
		{"take", nil, http.StatusOK},
		{"close", nil, http.StatusOK},
		{"assign", map[string]int64{"agent_id": h.alice.ID}, http.StatusConflict},
	} {
		h.do("POST", fmt.Sprintf("/api/v1/conversations/%d/%s", conv, step.action), alice, step.body).want(t, step.action, step.status)
	}
	if c := h.conversation(conv); c.Status != core.StatusResolved {
		t.Fatalf("after assigning herself: %+v", c)
	}
}

func TestAPIConversationActions(t *testing.T) {
	t.Parallel()
	h := startAPINode(t)
	root := h.login(apiRootEmail, apiRootPass)
	alice := h.login(apiAliceMail, apiAlicePass)
	conv := h.ingest(apiChannel, "v1", "Zhang San", "hello").Conversation.ID
	path := func(action string) string { return fmt.Sprintf("/api/v1/conversations/%d/%s", conv, action) }
	act := func(token, action string, body any, status int) apiConversation {
		t.Helper()
		var c apiConversation
		r := h.do("POST", path(action), token, body).want(t, action, status)
		if status == http.StatusOK {
			r.decode(t, &c)
		}
		return c
	}

	act(alice, "assign", map[string]int64{"agent_id": h.root.ID}, http.StatusForbidden)
	if c := act(alice, "assign", map[string]int64{"agent_id": h.alice.ID}, http.StatusOK); c.assignee() != h.alice.ID || c.Status != "open" {
		t.Fatalf("alice assigns herself: %+v", c)
	}
	act(root, "take", nil, http.StatusConflict)
	// Hers already: assigning herself again changes nothing (200).
	n0 := h.messageCount(conv)
	if c := act(alice, "assign", map[string]int64{"agent_id": h.alice.ID}, http.StatusOK); c.assignee() != h.alice.ID {
		t.Fatalf("alice assigns herself again: %+v", c)
	}
	if h.messageCount(conv) != n0 {
		t.Error("assigning herself again appended an event")
	}
	// Alice has it: she transfers it to Root.
	if c := act(alice, "transfer", map[string]int64{"agent_id": h.root.ID}, http.StatusOK); c.assignee() != h.root.ID {
		t.Fatalf("transfer to root: %+v", c)
	}
	act(alice, "transfer", map[string]int64{"agent_id": h.alice.ID}, http.StatusForbidden) // not hers any more
	act(alice, "assign", map[string]int64{"agent_id": h.alice.ID}, http.StatusForbidden)   // root's: only an admin moves it
	act(root, "transfer", map[string]int64{"agent_id": 4242}, http.StatusNotFound)         // no such agent
	if r := h.do("POST", path("transfer"), root, map[string]int64{"agent_id": 4242}); !strings.Contains(string(r.body), `"message":"there is no agent 4242"`) {
		t.Errorf("transfer to nobody: %s", r.body) // not "forbidden: …" on a 404, nor the store's words
	}
	// Back to the queue, then an admin assigns it.
	if c := act(root, "transfer", map[string]int64{"agent_id": 0}, http.StatusOK); c.Assignee != nil || c.Status != "pending" {
		t.Fatalf("back to the queue: %+v", c)
	}
	if c := act(root, "assign", map[string]int64{"agent_id": h.alice.ID}, http.StatusOK); c.assignee() != h.alice.ID {
		t.Fatalf("admin assigns alice: %+v", c)
	}
	if c := act(root, "assign", map[string]int64{"agent_id": h.root.ID}, http.StatusOK); c.assignee() != h.root.ID {
		t.Fatalf("admin assigns from alice to root: %+v", c)
	}
	n := h.messageCount(conv)
	if c := act(root, "assign", map[string]int64{"agent_id": h.root.ID}, http.StatusOK); c.assignee() != h.root.ID {
		t.Fatalf("assign to the assignee: %+v", c)
	}
	if h.messageCount(conv) != n {
		t.Error("assigning to the current assignee appended an event")
	}
	act(root, "assign", map[string]int64{"agent_id": 0}, http.StatusBadRequest)
	act(root, "assign", map[string]any{}, http.StatusBadRequest)

	// Close and reopen.
	if c := act(alice, "close", nil, http.StatusOK); c.Status != "resolved" || c.ResolvedAt == nil {
		t.Fatalf("close: %+v", c)
	}
	act(alice, "close", nil, http.StatusConflict)
	if c := act(alice, "reopen", nil, http.StatusOK); c.Status != "open" || c.assignee() != h.root.ID {
		t.Fatalf("reopen: %+v", c)
	}
	act(alice, "reopen", nil, http.StatusConflict)

	var ms struct{ Messages []apiMessage }
	h.do("GET", path("messages")+"?after_seq=0", root, nil).want(t, "history", http.StatusOK).decode(t, &ms)
	var events []string
	for _, m := range ms.Messages {
		if m.Event != nil {
			events = append(events, m.Event.Type)
		}
	}
	want := []string{"assigned", "transferred", "unassigned", "assigned", "transferred", "resolved", "reopened"}
	if !slices.Equal(events, want) {
		t.Errorf("events %v, want %v", events, want)
	}
	act(root, "take", nil, http.StatusOK) // already root's: answered as it is
	h.do("POST", "/api/v1/conversations/99999/take", root, nil).want(t, "take missing", http.StatusNotFound)
}

func TestAPIResend(t *testing.T) {
	t.Parallel()
	h := startAPINode(t)
	ctx := context.Background()
	alice := h.login(apiAliceMail, apiAlicePass)
	conv := h.ingest(apiChannel, "v1", "Zhang San", "hello").Conversation.ID
	var sent apiMessage
	h.do("POST", fmt.Sprintf("/api/v1/conversations/%d/messages", conv), alice, map[string]string{"client_id": "r1", "text": "your order"}).
		want(t, "reply", http.StatusCreated).decode(t, &sent)
	h.do("POST", fmt.Sprintf("/api/v1/messages/%d/resend", sent.ID), alice, nil).want(t, "resend a sent message", http.StatusBadRequest)

	if _, changed, err := h.store.UpdateStatus(ctx, core.StatusUpdate{MessageID: sent.ID, Status: core.MsgFailed, Reason: "user blocked the bot"}); err != nil || !changed {
		t.Fatalf("mark failed: %v %v", changed, err)
	}
	var failed struct{ Messages []apiMessage }
	h.do("GET", fmt.Sprintf("/api/v1/conversations/%d/messages", conv), alice, nil).want(t, "history", http.StatusOK).decode(t, &failed)
	if last := failed.Messages[len(failed.Messages)-1]; last.ID != sent.ID || last.Status != "failed" || last.FailReason != "user blocked the bot" {
		t.Fatalf("failed message as listed: %+v", last)
	}
	var again apiMessage
	h.do("POST", fmt.Sprintf("/api/v1/messages/%d/resend", sent.ID), alice, nil).want(t, "resend", http.StatusCreated).decode(t, &again)
	if again.ID == sent.ID || again.ResendOf != sent.ID || again.Text != "your order" || again.ConversationID != conv || again.Seq <= sent.Seq {
		t.Fatalf("resent %+v (of %+v)", again, sent)
	}
	h.do("POST", "/api/v1/messages/99999/resend", alice, nil).want(t, "resend missing", http.StatusNotFound)
	h.do("POST", "/api/v1/messages/abc/resend", alice, nil).want(t, "resend bad id", http.StatusBadRequest)
}

func TestAPIDeactivate(t *testing.T) {
	t.Parallel()
	h := startAPINode(t)
	ctx := context.Background()
	root := h.login(apiRootEmail, apiRootPass)
	alice := h.login(apiAliceMail, apiAlicePass)
	// Alice is at her console and gets the conversation.
	releaseAlice := h.svc.Presence().Connect(h.alice.ID)
	defer releaseAlice()
	conv := h.ingest(apiChannel, "v1", "Zhang San", "hello").Conversation.ID
	if c := h.conversation(conv); c.AssigneeID != h.alice.ID {
		t.Fatalf("not routed to alice: %+v", c)
	}
	// Root comes online; Alice is deactivated.
	releaseRoot := h.svc.Presence().Connect(h.root.ID)
	defer releaseRoot()
	var a apiAgent
	h.do("PATCH", fmt.Sprintf("/api/v1/agents/%d", h.alice.ID), root, map[string]any{"active": false}).
		want(t, "deactivate", http.StatusOK).decode(t, &a)
	if a.Active || a.Availability != "offline" {
		t.Fatalf("deactivated agent %+v", a)
	}
	if c := h.conversation(conv); c.AssigneeID != h.root.ID || c.Status != core.StatusOpen {
		t.Fatalf("after deactivation the conversation is %+v, want it routed to root", c)
	}
	ms, _ := h.store.Messages(ctx, core.MessageQuery{ConversationID: conv, AfterSeq: 2})
	if len(ms) < 2 || ms[0].Event == nil || ms[0].Event.Type != core.EventUnassigned || ms[1].Event == nil || ms[1].Event.Type != core.EventAssigned {
		t.Errorf("events after deactivation: %+v", ms)
	}
	h.do("GET", "/api/v1/me", alice, nil).want(t, "deactivated agent's token", http.StatusUnauthorized)
	h.do("POST", "/api/v1/auth/login", "", map[string]string{"email": apiAliceMail, "password": apiAlicePass}).
		want(t, "deactivated agent's login", http.StatusUnauthorized)

	// The last active admin can neither step down nor leave.
	h.do("PATCH", fmt.Sprintf("/api/v1/agents/%d", h.root.ID), root, map[string]any{"role": "agent"}).
		want(t, "demote the last admin", http.StatusConflict)
	h.do("PATCH", fmt.Sprintf("/api/v1/agents/%d", h.root.ID), root, map[string]any{"active": false}).
		want(t, "deactivate the last admin", http.StatusConflict)
	// Reactivated and promoted, Alice is an admin; then Root may step down.
	h.do("PATCH", fmt.Sprintf("/api/v1/agents/%d", h.alice.ID), root, map[string]any{"active": true, "role": "admin", "name": "Alice A."}).
		want(t, "reactivate", http.StatusOK).decode(t, &a)
	if !a.Active || a.Role != "admin" || a.Name != "Alice A." {
		t.Fatalf("reactivated %+v", a)
	}
	h.login(apiAliceMail, apiAlicePass)
	h.do("PATCH", fmt.Sprintf("/api/v1/agents/%d", h.root.ID), root, map[string]any{"role": "agent"}).
		want(t, "demote with another admin", http.StatusOK)
	h.do("POST", "/api/v1/agents", root, map[string]string{"email": "x@example.com", "name": "X", "password": "x-password"}).
		want(t, "no longer an admin", http.StatusForbidden)
}

func TestAPIBadInput(t *testing.T) {
	t.Parallel()
	h := startAPINode(t)
	alice := h.login(apiAliceMail, apiAlicePass)
	conv := h.ingest(apiChannel, "v1", "Zhang San", "hello").Conversation.ID
	msgs := fmt.Sprintf("/api/v1/conversations/%d/messages", conv)
	before := h.messageCount(conv)

	for _, tc := range []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"malformed JSON", "POST", msgs, `{"client_id":"a","text":`, 400, "bad_request"},
		{"unknown field", "POST", msgs, `{"client_id":"a","text":"hi","kind":"image"}`, 400, "bad_request"},
		{"wrong type", "POST", msgs, `{"client_id":1,"text":"hi"}`, 400, "bad_request"},
		{"empty text", "POST", msgs, `{"client_id":"a","text":"   "}`, 400, "bad_request"},
		{"no client id", "POST", msgs, `{"text":"hi"}`, 400, "bad_request"},
		{"bad client id", "POST", msgs, `{"client_id":"a b","text":"hi"}`, 400, "bad_request"},
		{"two values", "POST", msgs, `{"client_id":"a","text":"hi"}{"client_id":"b","text":"hi"}`, 400, "bad_request"},
		{"oversize", "POST", msgs, `{"client_id":"a","text":"` + strings.Repeat("x", apiMaxBody) + `"}`, 413, "too_large"},
		{"oversize note", "POST", fmt.Sprintf("/api/v1/conversations/%d/notes", conv), `{"client_id":"a","text":"` + strings.Repeat("x", apiMaxBody) + `"}`, 413, "too_large"},
		{"id not a number", "POST", "/api/v1/conversations/abc/messages", `{"client_id":"a","text":"hi"}`, 400, "bad_request"},
		{"id zero", "POST", "/api/v1/conversations/0/messages", `{"client_id":"a","text":"hi"}`, 400, "bad_request"},
		{"id negative", "POST", "/api/v1/conversations/-1/take", nil, 400, "bad_request"},
		{"id with sign", "GET", "/api/v1/conversations/+1", nil, 400, "bad_request"},
		{"id leading zero", "GET", fmt.Sprintf("/api/v1/conversations/0%d", conv), nil, 400, "bad_request"},
		{"id overflow", "GET", "/api/v1/conversations/99999999999999999999", nil, 400, "bad_request"},
		{"agent id", "PATCH", "/api/v1/agents/x", `{"name":"X"}`, 403, "forbidden"}, // admins only, before anything else
		{"unknown endpoint", "GET", "/api/v1/nothing", nil, 404, "not_found"},
		{"method", "DELETE", msgs, nil, 405, "method_not_allowed"},
		// A query parameter no endpoint takes: "?note=true" must not send
		// the customer what was meant as a note.
		{"query on a reply", "POST", msgs + "?note=true", `{"client_id":"q1","text":"meant as a note"}`, 400, "bad_request"},
		{"query on close", "POST", fmt.Sprintf("/api/v1/conversations/%d/close?notify=false", conv), nil, 400, "bad_request"},
		{"query on login", "POST", "/api/v1/auth/login?remember=1", `{"email":"x@example.com","password":"y"}`, 400, "bad_request"},
	} {
		r := h.do(tc.method, tc.path, alice, tc.body)
		if r.status != tc.status || r.code() != tc.code {
			t.Errorf("%s: HTTP %d %s, want %d %s", tc.name, r.status, r.body, tc.status, tc.code)
		}
	}
	// 405 says what is allowed.
	r := h.do("PUT", "/api/v1/conversations", alice, nil)
	if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") == "" || !strings.Contains(r.header.Get("Allow"), "GET") {
		t.Errorf("PUT /conversations: HTTP %d Allow %q", r.status, r.header.Get("Allow"))
	}
	// A body that is not JSON.
	req, _ := http.NewRequest("POST", h.base+msgs, strings.NewReader("client_id=a&text=hi"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+alice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("form body: HTTP %d, want 415", resp.StatusCode)
	}
	if n := h.messageCount(conv); n != before {
		t.Fatalf("bad input stored %d messages", n-before)
	}
	if c := h.conversation(conv); c.Status == core.StatusResolved {
		t.Fatal("a close with an unknown query parameter closed the conversation")
	}
	// Admin endpoints with bad bodies change nothing either.
	root := h.login(apiRootEmail, apiRootPass)
	h.do("PATCH", fmt.Sprintf("/api/v1/agents/%d", h.alice.ID), root, `{"active":false,"admin":true}`).
		want(t, "unknown field in patch", http.StatusBadRequest)
	h.do("PATCH", "/api/v1/agents/x", root, `{"active":false}`).want(t, "bad agent id", http.StatusBadRequest)
	if a, _ := h.store.Agent(context.Background(), h.alice.ID); !a.Active {
		t.Fatal("a rejected patch deactivated alice")
	}
	h.do("GET", "/api/v1/me", alice, nil).want(t, "alice still works", http.StatusOK)
}

// A login still checking the old password while an admin resets it, or
// deactivates the agent, gets no token that outlives the reset or the
// deactivation (each ends all the agent's tokens; a deactivated agent's
// token would work again once they are reactivated).
func TestLoginOverlappingAResetOrADeactivation(t *testing.T) {
	for _, change := range []string{"reset", "deactivate"} {
		t.Run(change, func(t *testing.T) {
			h := startAPINode(t)
			root := h.login(apiRootEmail, apiRootPass)
			// A costly hash: the login spends a while between reading
			// alice and making her session.
			hash, err := bcrypt.GenerateFromPassword([]byte(apiAlicePass), 11)
			if err != nil {
				t.Fatal(err)
			}
			a := h.alice
			a.PasswordHash = string(hash)
			if err := storetest.UpdateAgent(h.store, a); err != nil {
				t.Fatal(err)
			}
			got := make(chan apiResp, 1)
			go func() {
				got <- h.do("POST", "/api/v1/auth/login", "", map[string]string{"email": apiAliceMail, "password": apiAlicePass})
			}()
			time.Sleep(30 * time.Millisecond) // the login is checking the password
			path := fmt.Sprintf("/api/v1/agents/%d", h.alice.ID)
			if change == "reset" {
				h.do("POST", path+"/password", root, map[string]string{"password": "reset-by-root"}).want(t, "reset", http.StatusNoContent)
			} else {
				h.do("PATCH", path, root, map[string]any{"active": false}).want(t, "deactivate", http.StatusOK)
			}
			r := <-got
			if change == "deactivate" { // once the login has answered
				h.do("PATCH", path, root, map[string]any{"active": true}).want(t, "reactivate", http.StatusOK)
			}
			if r.status != http.StatusOK {
				return // refused: nothing outlives the change
			}
			var l struct{ Token string }
			r.decode(t, &l)
			h.do("GET", "/api/v1/me", l.Token, nil).want(t, "the token of a login beside the "+change, http.StatusUnauthorized)
		})
	}
}
