// Package webtest is a Go client of kefu's web protocol (docs/protocol.md),
// for tests and benchmarks: visitor sessions, WebSocket connections for
// visitors and agents, and long polling.
//
// It is written from the protocol document, not from the server's code (it
// does not import channels/web), so it also checks that the document is
// enough to write a client.
package webtest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Frame is any server frame; which fields are set depends on Type.
type Frame struct {
	Type string `json:"type"`

	// ack, error: the client id of the send answered.
	ID string `json:"id,omitempty"`
	// message, ack: the message.
	Message *Message `json:"message,omitempty"`
	// message (agents), conversation: the conversation.
	Conversation *Conversation `json:"conversation,omitempty"`
	// ack: the id had been sent before; Message is the stored one.
	Duplicate bool `json:"duplicate,omitempty"`
	// error.
	Error *Error `json:"error,omitempty"`

	// welcome.
	Visitor        *Visitor `json:"visitor,omitempty"`
	Agent          *Agent   `json:"agent,omitempty"`
	PingIntervalMS int64    `json:"ping_interval_ms,omitempty"`
	MaxFrameBytes  int64    `json:"max_frame_bytes,omitempty"`

	// synced (and long-poll answers): the cursor.
	ConversationID int64  `json:"conversation_id,omitempty"` // also receipt, typing, status
	LastSeq        *int64 `json:"last_seq,omitempty"`
	Cursor         *int64 `json:"cursor,omitempty"`

	// receipt, status, typing.
	Seq        int64  `json:"seq,omitempty"`
	Status     string `json:"status,omitempty"`
	By         string `json:"by,omitempty"`
	MessageID  int64  `json:"message_id,omitempty"`
	FailReason string `json:"fail_reason,omitempty"`
	SenderKind string `json:"sender_kind,omitempty"`
	SenderID   int64  `json:"sender_id,omitempty"`
	SenderName string `json:"sender_name,omitempty"`
	On         bool   `json:"on,omitempty"`

	// Raw is the frame as received.
	Raw json.RawMessage `json:"-"`
}

// Message is a message as visitors or agents are shown it (agents see more
// fields).
type Message struct {
	ID             int64     `json:"id"`
	ConversationID int64     `json:"conversation_id"`
	Seq            int64     `json:"seq"`
	SenderKind     string    `json:"sender_kind"`
	SenderID       int64     `json:"sender_id,omitempty"`
	SenderName     string    `json:"sender_name,omitempty"`
	Visibility     string    `json:"visibility,omitempty"`
	Kind           string    `json:"kind"`
	Text           string    `json:"text,omitempty"`
	Event          *Event    `json:"event,omitempty"`
	Status         string    `json:"status"`
	FailReason     string    `json:"fail_reason,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
}

// Event is the content of an event message.
type Event struct {
	Type      string `json:"type"`
	AgentID   int64  `json:"agent_id,omitempty"`
	AgentName string `json:"agent_name,omitempty"`
}

// Conversation is a conversation as visitors or agents are shown it.
type Conversation struct {
	ID         int64     `json:"id"`
	Status     string    `json:"status"`
	LastSeq    int64     `json:"last_seq"`
	AssigneeID int64     `json:"assignee_id,omitempty"`
	Channel    string    `json:"channel,omitempty"`
	ExternalID string    `json:"external_id,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// Error is an error frame's (or HTTP error body's) detail.
type Error struct {
	Code         string `json:"code"`
	Message      string `json:"message"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
}

// Visitor is who a visitor session is.
type Visitor struct {
	ID       string `json:"id"`
	Verified bool   `json:"verified"`
	Name     string `json:"name,omitempty"`
}

// Agent is who an agent connection is.
type Agent struct {
	ID    int64  `json:"id"`
	Email string `json:"email"`
	Name  string `json:"name"`
	Role  string `json:"role"`
}

// Client reaches one kefu server.
type Client struct {
	// Base is the server's URL, e.g. "http://127.0.0.1:8080".
	Base string
	// Origin, when set, is sent as the Origin header (a browser page).
	Origin string
	// HTTP is the client for HTTP requests; nil: http.DefaultClient.
	HTTP *http.Client
	// Header is added to every request and WebSocket handshake.
	Header http.Header
}

// HTTPError is an HTTP answer other than 2xx.
type HTTPError struct {
	Status     int
	RetryAfter string // the Retry-After header, if any
	Err        Error  // the JSON error body
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Err.Code, e.Err.Message)
}

// ResponseError is the *HTTPError of an answer that is not a success, with
// its body read: its status, Retry-After and JSON error.
func ResponseError(resp *http.Response, body []byte) *HTTPError {
	he := &HTTPError{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After")}
	var eb struct {
		Error Error `json:"error"`
	}
	if json.Unmarshal(body, &eb) == nil {
		he.Err = eb.Error
	}
	return he
}

// StatusOf returns the HTTP status of an *HTTPError, or 0.
func StatusOf(err error) int {
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Status
	}
	return 0
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// do sends a request with a JSON body (nil: none) and decodes a 2xx JSON
// answer into out.
func (c *Client) do(ctx context.Context, method, path, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, ok := body.(json.RawMessage)
		if !ok {
			var err error
			if b, err = json.Marshal(body); err != nil {
				return err
			}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return err
	}
	for k, vs := range c.Header {
		req.Header[k] = vs
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if c.Origin != "" {
		req.Header.Set("Origin", c.Origin)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return ResponseError(resp, data)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// SessionRequest starts or resumes a visitor session.
type SessionRequest struct {
	Token    string    `json:"token,omitempty"`
	Name     string    `json:"name,omitempty"`
	Identity *Identity `json:"identity,omitempty"`
}

// Identity is a verified identity, signed by the site's backend (Sign).
type Identity struct {
	UserID    string `json:"user_id"`
	Timestamp int64  `json:"timestamp"`
	Signature string `json:"signature"`
}

// Sign returns the identity a site's backend vouches for: the hex
// HMAC-SHA256, keyed by identity_secret, of
// "kefu-identity-v1\n" + user id + "\n" + unix seconds.
func Sign(secret, userID string, at time.Time) *Identity {
	ts := at.Unix()
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("kefu-identity-v1\n" + userID + "\n" + strconv.FormatInt(ts, 10)))
	return &Identity{UserID: userID, Timestamp: ts, Signature: hex.EncodeToString(m.Sum(nil))}
}

// Session is a visitor session.
type Session struct {
	Token             string        `json:"token"`
	ExpiresAt         time.Time     `json:"expires_at"`
	Visitor           Visitor       `json:"visitor"`
	Conversation      *Conversation `json:"conversation"`
	LastSeq           int64         `json:"last_seq"`
	PingIntervalMS    int64         `json:"ping_interval_ms"`
	LongPollTimeoutMS int64         `json:"long_poll_timeout_ms"`
	MaxFrameBytes     int64         `json:"max_frame_bytes"`
}

// StartSession is POST /api/v1/visitor/session.
func (c *Client) StartSession(ctx context.Context, req SessionRequest) (*Session, error) {
	var s Session
	if err := c.do(ctx, http.MethodPost, "/api/v1/visitor/session", "", req, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Login is POST /api/v1/auth/login: it returns the agent's bearer token.
func (c *Client) Login(ctx context.Context, email, password string) (string, error) {
	var out struct {
		Token string `json:"token"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/auth/login", "", map[string]string{"email": email, "password": password}, &out); err != nil {
		return "", err
	}
	if out.Token == "" {
		return "", errors.New("webtest: login answered no token")
	}
	return out.Token, nil
}

// History is the answer of GET /api/v1/visitor/messages.
type History struct {
	Conversation *Conversation `json:"conversation"`
	Messages     []Message     `json:"messages"`
	HasMore      bool          `json:"has_more"`
}

// History pages back through a visitor's conversation (0: the newest).
func (c *Client) History(ctx context.Context, token string, conv, beforeSeq int64, limit int) (*History, error) {
	q := url.Values{}
	if conv > 0 {
		q.Set("conversation_id", strconv.FormatInt(conv, 10))
	}
	if beforeSeq > 0 {
		q.Set("before_seq", strconv.FormatInt(beforeSeq, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var h History
	if err := c.do(ctx, http.MethodGet, "/api/v1/visitor/messages?"+q.Encode(), token, nil, &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// Cursor is where a client resumes: a visitor's (ConversationID, LastSeq)
// or an agent's message id (Cursor; nil: from now on).
type Cursor struct {
	ConversationID int64
	LastSeq        int64
	Cursor         *int64
}

// Advance moves a visitor cursor past a message frame: to the newest
// conversation, and the highest sequence number in it.
func (cu *Cursor) Advance(f Frame) {
	if f.Type != "message" || f.Message == nil {
		return
	}
	m := f.Message
	switch {
	case m.ConversationID > cu.ConversationID:
		cu.ConversationID, cu.LastSeq = m.ConversationID, m.Seq
	case m.ConversationID == cu.ConversationID && m.Seq > cu.LastSeq:
		cu.LastSeq = m.Seq
	}
	if cu.Cursor != nil && m.ID > *cu.Cursor {
		id := m.ID
		cu.Cursor = &id
	}
}

// Conn is a WebSocket connection speaking the protocol. A goroutine reads
// frames into a queue (answering pings unless Silent); Next and WaitFor
// take from it.
type Conn struct {
	ws *websocket.Conn

	wmu sync.Mutex // one writer at a time

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []Frame
	err     error // why reading stopped
	silent  bool
	pings   int
	Welcome Frame

	resume     chan struct{}
	resumeOnce sync.Once
}

// DialOptions tune a WebSocket connection.
type DialOptions struct {
	// Silent: do not answer the server's pings (to test that the server
	// drops silent clients).
	Silent bool
	// NoHello: send nothing after connecting (to test the hello rules).
	NoHello bool
	// Hello, when set, is sent instead of the built hello frame.
	Hello any
	// Paused: do not read until Resume (a slow consumer).
	Paused bool
}

// DialVisitor connects to /ws/visitor and says hello with token and the
// cursor (0, 0: the newest conversation from its start).
func (c *Client) DialVisitor(ctx context.Context, token string, cur Cursor, opt DialOptions) (*Conn, error) {
	hello := map[string]any{"type": "hello", "token": token}
	if cur.ConversationID > 0 {
		hello["conversation_id"] = cur.ConversationID
		hello["last_seq"] = cur.LastSeq
	}
	return c.dial(ctx, "/ws/visitor", nil, hello, opt)
}

// DialAgent connects to /ws/agent and says hello with token and cursor
// (nil: from now on). With header true the token travels in the
// Authorization header of the handshake instead of the hello.
func (c *Client) DialAgent(ctx context.Context, token string, cursor *int64, header bool, opt DialOptions) (*Conn, error) {
	hello := map[string]any{"type": "hello"}
	var h http.Header
	if header {
		h = http.Header{"Authorization": {"Bearer " + token}}
	} else {
		hello["token"] = token
	}
	if cursor != nil {
		hello["cursor"] = *cursor
	}
	return c.dial(ctx, "/ws/agent", h, hello, opt)
}

// DialError is a refused WebSocket handshake.
type DialError struct {
	Status int
	Body   string
}

func (e *DialError) Error() string {
	return fmt.Sprintf("handshake refused: HTTP %d %s", e.Status, e.Body)
}

func (c *Client) dial(ctx context.Context, path string, h http.Header, hello any, opt DialOptions) (*Conn, error) {
	u := "ws" + strings.TrimPrefix(c.Base, "http") + path
	hdr := http.Header{}
	for k, vs := range c.Header {
		hdr[k] = vs
	}
	for k, vs := range h {
		hdr[k] = vs
	}
	if c.Origin != "" {
		hdr.Set("Origin", c.Origin)
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.DialContext(ctx, u, hdr)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return nil, &DialError{Status: resp.StatusCode, Body: string(body)}
		}
		return nil, err
	}
	cn := &Conn{ws: ws, silent: opt.Silent, resume: make(chan struct{})}
	cn.cond = sync.NewCond(&cn.mu)
	if !opt.Paused {
		close(cn.resume)
	}
	go cn.read()
	if opt.NoHello {
		return cn, nil
	}
	if opt.Hello != nil {
		hello = opt.Hello
	}
	if err := cn.Send(hello); err != nil {
		cn.Close()
		return nil, err
	}
	return cn, nil
}

// Resume starts reading on a connection dialled Paused.
func (cn *Conn) Resume() {
	cn.resumeOnce.Do(func() {
		select {
		case <-cn.resume:
		default:
			close(cn.resume)
		}
	})
}

func (cn *Conn) read() {
	<-cn.resume
	for {
		_, data, err := cn.ws.ReadMessage()
		if err != nil {
			cn.mu.Lock()
			cn.err = err
			cn.cond.Broadcast()
			cn.mu.Unlock()
			return
		}
		var f Frame
		if err := json.Unmarshal(data, &f); err != nil {
			f = Frame{Type: "?"}
		}
		f.Raw = append(json.RawMessage(nil), data...)
		if f.Type == "ping" {
			cn.mu.Lock()
			cn.pings++
			cn.mu.Unlock()
			if !cn.silent {
				_ = cn.Send(map[string]string{"type": "pong"})
			}
			continue
		}
		cn.mu.Lock()
		cn.queue = append(cn.queue, f)
		cn.cond.Broadcast()
		cn.mu.Unlock()
	}
}

// Pings is how many pings the server has sent.
func (cn *Conn) Pings() int {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.pings
}

// Send writes one frame (any value encoded as JSON).
func (cn *Conn) Send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return cn.SendRaw(b)
}

// SendRaw writes one text frame as is.
func (cn *Conn) SendRaw(b []byte) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	_ = cn.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return cn.ws.WriteMessage(websocket.TextMessage, b)
}

// SendText sends a send frame (conv 0 for a visitor).
func (cn *Conn) SendText(id string, conv int64, text string, note bool) error {
	f := map[string]any{"type": "send", "id": id, "text": text}
	if conv > 0 {
		f["conversation_id"] = conv
	}
	if note {
		f["note"] = true
	}
	return cn.Send(f)
}

// WaitFor removes and returns the first frame (in arrival order) for which
// match is true, waiting up to timeout. Other frames stay queued.
func (cn *Conn) WaitFor(timeout time.Duration, match func(Frame) bool) (Frame, error) {
	deadline := time.Now().Add(timeout)
	stop := time.AfterFunc(timeout, func() {
		cn.mu.Lock()
		cn.cond.Broadcast()
		cn.mu.Unlock()
	})
	defer stop.Stop()
	cn.mu.Lock()
	defer cn.mu.Unlock()
	for {
		for i, f := range cn.queue {
			if match(f) {
				cn.queue = append(cn.queue[:i:i], cn.queue[i+1:]...)
				return f, nil
			}
		}
		if cn.err != nil {
			return Frame{}, cn.err
		}
		if !time.Now().Before(deadline) {
			return Frame{}, fmt.Errorf("webtest: no matching frame within %s (queued: %s)", timeout, describe(cn.queue))
		}
		cn.cond.Wait()
	}
}

func describe(fs []Frame) string {
	var b strings.Builder
	for i, f := range fs {
		if i > 0 {
			b.WriteString(", ")
		}
		if len(f.Raw) > 200 {
			fmt.Fprintf(&b, "%s…(%d bytes)", f.Raw[:200], len(f.Raw))
		} else {
			b.Write(f.Raw)
		}
	}
	return b.String()
}

// Next returns the next frame.
func (cn *Conn) Next(timeout time.Duration) (Frame, error) {
	return cn.WaitFor(timeout, func(Frame) bool { return true })
}

// Expect returns the next frame and fails unless it has type typ.
func (cn *Conn) Expect(typ string, timeout time.Duration) (Frame, error) {
	f, err := cn.Next(timeout)
	if err == nil && f.Type != typ {
		err = fmt.Errorf("webtest: got %s, want a %s frame", f.Raw, typ)
	}
	return f, err
}

// Sync reads the welcome, the replayed frames and synced, and returns the
// replayed frames and the synced frame.
func (cn *Conn) Sync(timeout time.Duration) (replay []Frame, synced Frame, err error) {
	if cn.Welcome, err = cn.Next(timeout); err != nil {
		return nil, Frame{}, err
	}
	if cn.Welcome.Type != "welcome" {
		return nil, cn.Welcome, fmt.Errorf("webtest: first frame %s, want welcome", cn.Welcome.Raw)
	}
	for {
		f, err := cn.Next(timeout)
		if err != nil {
			return replay, Frame{}, err
		}
		if f.Type == "synced" {
			return replay, f, nil
		}
		replay = append(replay, f)
	}
}

// Ack waits for the ack (or error) answering the send with client id id.
func (cn *Conn) Ack(id string, timeout time.Duration) (Frame, error) {
	f, err := cn.WaitFor(timeout, func(f Frame) bool { return (f.Type == "ack" || f.Type == "error") && f.ID == id })
	if err == nil && f.Type == "error" {
		return f, fmt.Errorf("webtest: send %s refused: %s %s", id, f.Error.Code, f.Error.Message)
	}
	return f, err
}

// Messages waits for n message frames and returns them (other frames stay
// queued).
func (cn *Conn) Messages(n int, timeout time.Duration) ([]Frame, error) {
	var out []Frame
	for len(out) < n {
		f, err := cn.WaitFor(timeout, func(f Frame) bool { return f.Type == "message" })
		if err != nil {
			return out, err
		}
		out = append(out, f)
	}
	return out, nil
}

// Queued returns the frames received and not yet taken.
func (cn *Conn) Queued() []Frame {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return append([]Frame(nil), cn.queue...)
}

// Closed waits until the server closes the connection and returns the
// close code (0 if it ended without a close frame).
func (cn *Conn) Closed(timeout time.Duration) (int, error) {
	_, err := cn.WaitFor(timeout, func(Frame) bool { return false })
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code, nil
	}
	cn.mu.Lock()
	ended := cn.err != nil
	cn.mu.Unlock()
	if ended {
		return 0, nil
	}
	return 0, err
}

// Close closes the connection without a close frame (as a lost network
// would).
func (cn *Conn) Close() error { return cn.ws.Close() }

// CloseNormally sends a close frame and closes.
func (cn *Conn) CloseNormally() error {
	cn.wmu.Lock()
	_ = cn.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	cn.wmu.Unlock()
	return cn.ws.Close()
}

// Poller is a long-polling client. Its Cursor moves with every poll.
type Poller struct {
	Client *Client
	Token  string
	Agent  bool
	Cursor Cursor
}

// pollAnswer is a long-poll answer.
type pollAnswer struct {
	Frames         []json.RawMessage `json:"frames"`
	ConversationID *int64            `json:"conversation_id"`
	LastSeq        *int64            `json:"last_seq"`
	Cursor         *int64            `json:"cursor"`
}

func decodeFrames(raws []json.RawMessage) []Frame {
	out := make([]Frame, 0, len(raws))
	for _, r := range raws {
		var f Frame
		if json.Unmarshal(r, &f) != nil {
			f.Type = "?"
		}
		f.Raw = r
		out = append(out, f)
	}
	return out
}

// Poll is one GET /lp/visitor or /lp/agent: it returns the frames after
// the cursor (waiting up to the server's long_poll_timeout) and moves the
// cursor.
func (p *Poller) Poll(ctx context.Context) ([]Frame, error) {
	q := url.Values{}
	path := "/lp/visitor"
	if p.Agent {
		path = "/lp/agent"
		if p.Cursor.Cursor != nil {
			q.Set("cursor", strconv.FormatInt(*p.Cursor.Cursor, 10))
		}
	} else if p.Cursor.ConversationID > 0 {
		q.Set("conversation_id", strconv.FormatInt(p.Cursor.ConversationID, 10))
		q.Set("last_seq", strconv.FormatInt(p.Cursor.LastSeq, 10))
	}
	var a pollAnswer
	if err := p.Client.do(ctx, http.MethodGet, path+"?"+q.Encode(), p.Token, nil, &a); err != nil {
		return nil, err
	}
	if a.ConversationID != nil && a.LastSeq != nil {
		p.Cursor.ConversationID, p.Cursor.LastSeq = *a.ConversationID, *a.LastSeq
	}
	if a.Cursor != nil {
		c := *a.Cursor
		p.Cursor.Cursor = &c
	}
	return decodeFrames(a.Frames), nil
}

// Post is one POST /lp/visitor or /lp/agent with frames; it returns the
// replies.
func (p *Poller) Post(ctx context.Context, frames ...any) ([]Frame, error) {
	path := "/lp/visitor"
	if p.Agent {
		path = "/lp/agent"
	}
	var body any = frames
	if len(frames) == 1 {
		body = frames[0]
	}
	var a pollAnswer
	if err := p.Client.do(ctx, http.MethodPost, path, p.Token, body, &a); err != nil {
		return nil, err
	}
	return decodeFrames(a.Frames), nil
}

// PostRaw is POST with a body as is.
func (p *Poller) PostRaw(ctx context.Context, body []byte) ([]Frame, error) {
	path := "/lp/visitor"
	if p.Agent {
		path = "/lp/agent"
	}
	var a pollAnswer
	if err := p.Client.do(ctx, http.MethodPost, path, p.Token, json.RawMessage(body), &a); err != nil {
		return nil, err
	}
	return decodeFrames(a.Frames), nil
}

// SendText posts one send frame and returns its reply (an ack or an
// error).
func (p *Poller) SendText(ctx context.Context, id string, conv int64, text string, note bool) (Frame, error) {
	f := map[string]any{"type": "send", "id": id, "text": text}
	if conv > 0 {
		f["conversation_id"] = conv
	}
	if note {
		f["note"] = true
	}
	fs, err := p.Post(ctx, f)
	if err != nil {
		return Frame{}, err
	}
	if len(fs) != 1 {
		return Frame{}, fmt.Errorf("webtest: %d replies to one send", len(fs))
	}
	if fs[0].Type == "error" {
		return fs[0], fmt.Errorf("webtest: send %s refused: %s %s", id, fs[0].Error.Code, fs[0].Error.Message)
	}
	return fs[0], nil
}
